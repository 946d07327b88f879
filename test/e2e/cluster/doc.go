// Package cluster runs a whole Tessera cluster on one machine, with no GPU:
// a real etcd and kube-apiserver on 127.0.0.1, a fleet of simulated GPU
// nodes (each a kubelet stand-in from test/e2e/kubelet, driving the kubelet's
// own device manager, and a real gpu-agent process on a simulated machine,
// --backend=sim:<machine.yaml>), and a real gpu-scheduler with Tessera's
// profile. RunScenario then plays an MLOps stack's workloads on it, changes
// one node's MIG layout mid-way and returns what happened as a Result:
// where each pod landed, the devices it holds, why, the GPU usage per node,
// fragmentation before and after, refusals and each agent's metrics.
//
// `make demo` (hack/cmd/demo) prints a Result; test/e2e asserts one. The
// package owns the fleet and workload definitions, the generated configs
// and the child processes; it must not print (callers pass Progress) and
// must not hard-code outcomes: every Result field is read back from the
// cluster (pods, GPUNodes, node labels, /metrics).
//
// Binaries that call Start must call kubelet.RunIfChild first in main or
// TestMain: the stand-ins are this binary, re-executed in their own user and
// mount namespaces.
package cluster
