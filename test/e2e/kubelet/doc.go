// Package kubelet is the project's kubelet stand-in for local clusters: one
// process per simulated node that does the parts of a kubelet the GPU path
// needs, with the kubelet's own code where it matters. It registers the Node
// (capacity from the kubelet's device manager, a Ready condition), runs
// k8s.io/kubernetes/pkg/kubelet/cm/devicemanager so that the gpu-agent's
// device plugin registers, advertises and allocates exactly as on a real
// node, admits the pods bound to its node through the device manager's
// Allocate, marks them Running (or Failed with the admission error), finishes
// deleted pods, and serves the kubelet's PodResources API (the kubelet's own
// server, k8s.io/kubernetes/pkg/kubelet/apis/podresources) so that the agent
// sees which container holds which device.
//
// The device manager listens on the fixed path
// /var/lib/kubelet/device-plugins/kubelet.sock, so each stand-in runs in its
// own user and mount namespace with a private directory bind-mounted over
// /var/lib (Start re-executes the calling binary there; the binary's main or
// TestMain calls RunIfChild first). Nothing is mounted on the host and the
// mounts vanish with the process.
//
// It runs no containers, no probes, no cgroups and no CPU or memory managers:
// a pod is Running as soon as its devices are allocated. It is test and demo
// tooling under test/: the gpu-agent binary must never import it.
package kubelet
