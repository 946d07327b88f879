// Package gpuaudit watches, from the node's kernel with eBPF, every open
// of an NVIDIA character device and every mknod of one (matched by device
// number, never by path) and compares the process's pod with what the
// kubelet allocated to it: an open by a pod of a GPU it was not allocated, or by a
// pod with no GPU at all, counts in tessera_gpu_unauthorized_open_total and
// becomes a rate-limited Warning Event on the pod. Host processes (nvidia-smi,
// DCGM, nvidia-persistenced, the agent) are counted apart, not as violations.
//
// It owns the BPF program (bpf/audit.c, compiled by bpf2go into the
// committed audit_*_bpfel.{go,o}), the choice of kernel hook (the first of
// cgroup_device — device permission checks, on the cgroup2 root, always
// allowing — tp_btf, raw tracepoint and syscall tracepoints that loads and
// attaches),
// the device table (which device number is which GPU, MIG capability or
// control node) and the verdict on each open, with its metrics and Events.
//
// It must not crash or block the agent: without privileges, kernel BTF or a
// usable hook it reports why (log line, tessera_gpu_audit_up 0 with a
// reason) and Run returns nil. Its memory is bounded (ring buffer, caches,
// series). It must not read flags or environment variables, talk to NVML,
// or decide allocations: it reads the PodResources view and the process
// owners it is given.
package gpuaudit
