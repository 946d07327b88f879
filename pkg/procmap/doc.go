// Package procmap maps a host process to the container and pod it runs in,
// from the process's cgroup: /proc/<pid>/cgroup on cgroup v1 and v2, the
// cgroup paths of containerd, CRI-O and cri-dockerd under the kubelet's
// systemd and cgroupfs drivers, and a pod directory (pod UID → namespace,
// name and container names) built from the node's pods.
//
// It owns the cgroup path parser, the PID → owner cache (entries are re-read
// after a TTL, the cache is bounded) and the pod directory. Callers resolve
// PIDs on their own interval (the telemetry pass, an audit event), never per
// scrape.
//
// It must not read flags or environment variables, talk to NVML or decide
// what a process may do: it says who owns a process, nothing more.
package procmap
