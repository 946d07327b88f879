// Package schedperf measures gpu-scheduler's throughput with kube-scheduler's
// own benchmark harness, scheduler_perf (k8s.io/kubernetes/test/integration/
// scheduler_perf): the same GPU workloads (DGX H100 nodes, MIG-mixed DGX
// nodes, time-shared A10 servers; 8-GPU workers, 1/2/4-GPU pods, MIG
// slices, share units) under kube-scheduler's default profile and under the
// default profile with Tessera's plugin, in one run, and the ratio of their
// scheduling throughputs. `make bench-scheduler` runs it.
//
// It owns the benchmark's configuration, templates and the GPUNodes it
// publishes for the benchmark's nodes; it holds no placement logic and is
// imported by nothing.
package schedperf
