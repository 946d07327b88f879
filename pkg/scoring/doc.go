// Package scoring owns Tessera's one placement policy: the score of putting
// a pod on a node, the device set it gets there, and the node model both
// take (NodeSpec, NodeState: whole GPUs, share units per GPU, MIG slices,
// links). The scheduler plugin, `gpu-scheduler simulate` (trace replay) and
// `gpu-scheduler simulate scenarios` all call Scorer.Score on nodes built by
// NewNodeState.
//
// A score ranks nodes in three tiers: the hardware (the product's cost and
// the device set's interconnect), then the drop in the node's expected
// fragmentation against a target workload learned online from the pods
// that arrive (FGD's measure generalised to MIG slices and shares, plus the
// GPU capacity the node's CPU cannot feed and the expected residue of
// partly used GPUs, less the cost of taking a GPU model that constrained
// pods need while it is scarce and of breaking one of the few nodes that
// can still host a multi-GPU pod), then tie-breakers (NVLink islands kept,
// packing).
//
// It is pure: it imports no Kubernetes framework code (k8s.io/kubernetes)
// and keeps no clocks, flags or I/O.
package scoring
