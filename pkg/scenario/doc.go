// Package scenario runs synthetic GPU clusters and workloads that the openb
// traces cannot express, under Tessera's scoring (pkg/scoring) and baseline
// policies: DGX H100 nodes with MIG layouts, PCIe L40S servers on two NUMA
// nodes, time-shared nodes; 8/4/2-GPU training that wants NVLink-connected
// sets, 1g/2g/3g MIG inference, share-sized notebooks and product-constrained
// pods. It reports, per policy, the share of multi-GPU pods placed on the
// best interconnect available, the GPUs stranded at saturation by cause, and
// the premium GPUs given to pods that a cheaper allowed product would have
// served.
//
// It owns the scenario definitions, the machine templates (machines.json,
// discovered from the simulated machines of pkg/gpu/sim and checked against
// them by a test), the replay and the report. Runs are seeded and
// deterministic. It must not read flags, the clock or the environment: the
// command line (gpu-scheduler simulate scenarios) passes values in.
package scenario
