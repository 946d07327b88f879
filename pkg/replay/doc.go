// Package replay is Tessera's offline simulator: one package for every
// placement experiment, under one Policy interface.
//
//   - Trace replay of the openb GPU-cluster traces (the Alibaba
//     cluster-trace-gpu-v2023 node and pod CSVs) under the FGD paper's
//     protocol: the single math/rand stream per seed, the arrival order,
//     tuning the workload to a multiple of the cluster's GPU capacity, the
//     one-pod-at-a-time scheduling loop with integer scores and the node-rank
//     tie-break, GPU placement on commit, and the allocation curve sampled at
//     each percent of arrived demand (../shared/benchmarks/fgd-protocol.md is
//     the specification); the experiment runner behind `gpu-scheduler
//     simulate` (seeds in parallel, CSV and JSON summaries, charts,
//     comparison with a published anchor).
//   - Scenarios the traces cannot express (MIG layouts, NVLink islands,
//     time-shared GPUs, product constraints) on the gpu agent's simulated
//     machines, behind `gpu-scheduler simulate scenarios`.
//   - The upper bound on what any policy can reach on a trace (UpperBound,
//     its LP solver in lp.go), behind `gpu-scheduler simulate bound`.
//
// The policies are the protocol's baselines (Random, DotProd, GpuClustering,
// GpuPacking, BestFit, FGD; FGD, BestFit and Random also restated for
// scenario nodes) and Tessera, which is an adapter over pkg/scoring's Scorer
// (the code the scheduler plugin runs) on nodes described as the plugin sees
// them (TraceNodeSpec, PodDemand): it holds no scoring logic of its own.
//
// It is pure computation over files it is given: it must not import
// k8s.io/kubernetes, read flags or environment variables, or print; it writes
// only to the io.Writers and output directories its callers hand it.
package replay
