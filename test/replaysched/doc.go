// Package replaysched replays an openb trace through the real kube-scheduler
// and compares where its pods land with where `gpu-scheduler simulate` puts
// them: the proof that the simulator's numbers are the scheduler's.
//
// A replay here is one seed of a trace at the protocol's 130 % (pkg/replay's
// arrival order and node ranks), against a real etcd and kube-apiserver
// (pkg/k8stest) with the in-process kube-scheduler (app.Setup/app.Run) and a
// profile in which TesseraGPU is the only Score plugin and every node is
// scored. Nodes and GPUNodes are built from the trace rows
// (replay.TraceNode, TraceGPUNode: every GPU advertised whole and in 1,000
// units), each Kubernetes node named by its replay rank so that the
// plugin's tie-break between equal keys (node name) is the replay's (node
// rank). Pods (replay.TracePod) are created one at a time in arrival order,
// each waited on until it is bound or Unschedulable; an unschedulable pod is
// deleted, as the replay drops it. There is no kubelet: binding is enough.
// The simulator's side is replay.Replay under tessera-online (no prior: the
// target is learned from the arriving pods only, as the plugin learns it).
//
// TestSliceAgrees runs a 1-in-5 excerpt of the default trace committed in
// testdata (about 2,100 pods on 243 nodes) in `make test`;
// TestTraceAgrees runs the whole trace for `make bench-replay`
// (TESSERA_REPLAY_TRACES names the traces' directory). It holds no
// placement logic and is imported by nothing.
package replaysched
