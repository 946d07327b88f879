// Package replay owns the replay of openb GPU-cluster traces (the Alibaba
// cluster-trace-gpu-v2023 node and pod CSVs) under the FGD paper's protocol: the
// single math/rand stream per seed, the arrival order, tuning the workload to a
// multiple of the cluster's GPU capacity, the one-pod-at-a-time scheduling loop
// with integer scores and the node-rank tie-break, GPU placement on commit, and
// the allocation curve sampled at each percent of arrived demand
// (../shared/benchmarks/fgd-protocol.md is the specification).
//
// It also holds the baseline placement policies of that protocol (Random,
// DotProd, GpuClustering, GpuPacking, BestFit, FGD) behind the small Policy
// interface through which Tessera's own scoring plugs in, and the experiment
// runner behind `gpu-scheduler simulate` (seeds in parallel, CSV and JSON
// summaries, comparison with a published anchor).
//
// It is pure computation over files it is given: it must not import
// k8s.io/kubernetes, read flags or environment variables, or print; it writes
// only to the io.Writers its callers hand it.
package replay
