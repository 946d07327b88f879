// Package reconcile switches a node's MIG and sharing layouts when an
// operator relabels the node, the way NVIDIA's mig-manager does:
// nvidia.com/mig.config names the wanted MIG layout and
// nvidia.com/mig.config.state reports pending, success or failed;
// nvidia.com/device-plugin.config names the sharing config.
//
// It owns the agent's watch on its own Node, the order of a layout change
// (pending, plan, free the GPUs that change from pods by waiting or evicting,
// apply, re-advertise, success or failed), its timeouts, and reporting each
// outcome as a state label, a Node Event and a metric. Planning and applying
// a MIG layout belong to pkg/mig, advertising to pkg/deviceplugin, and who
// holds which device to pkg/podresources; this package talks to NVML only
// through pkg/mig and to the kubelet only through PodResources. It must never
// leave a node in pending: every wait is bounded and ends in failed with the
// previous layout in place.
package reconcile
