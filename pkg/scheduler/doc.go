// Package scheduler adapts Tessera's placement policy (pkg/scoring) to
// kube-scheduler's framework: it reads a pod's GPU demand (PreFilter),
// refuses what no node can host with a reason a user understands, turns each
// node's GPUNode into the scoring node model, keeps the devices of pods in
// flight in an assume cache reconciled with the allocations the gpu-agent
// reports, and writes the devices it expects into the pod (PreBind).
//
// It owns the framework wiring, the plugin's versioned arguments, the
// GPUNode-to-node-state translation and the scheduler's GPU metrics. It must
// not hold placement logic of its own: which node and which devices are best
// is pkg/scoring's decision, and this package only asks it. Only
// cmd/gpu-scheduler and tests import this package (it links
// k8s.io/kubernetes, which the gpu-agent must not).
package scheduler
