package telemetry

import (
	"cmp"
	"context"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/podresources"
)

var (
	podLabelsUpDesc = gaugeDesc("tessera_telemetry_pod_labels_up",
		"1 if GPU series carry pod, namespace and container labels from the kubelet's PodResources view, 0 if they cannot; reason is the class of the last failure (also while a failing view is still used): not_configured, not_refreshed_yet, socket_not_found, socket_error, timeout, unavailable, response_too_large, list_failed; the agent's log has the details.")
	podDevicesDesc = gaugeDesc("tessera_pod_gpu_devices",
		"Devices of this node's GPUs (whole GPUs, MIG devices, shares) allocated to the container, by resource.")
)

// podsCollector exports the pod attribution's status and the devices
// allocated per container.
type podsCollector struct{}

func (podsCollector) Name() string { return "pods" }

func (podsCollector) Update(_ context.Context, p *pass, b *builder) error {
	// A short class, not the error text: the label must not grow a new
	// series for every distinct gRPC message.
	reason := p.podStatus.Class
	switch {
	case !p.pods:
		reason = "not_configured"
	case !p.podStatus.OK && reason == "":
		reason = podresources.ReasonNotRefreshed
	}
	b.gauge(&podLabelsUpDesc, labels{label("reason", reason)}, boolValue(p.podsUsable))
	if !p.podsUsable {
		return nil
	}
	type key struct{ ns, pod, container, resource string }
	counts := map[key]int{}
	var order []key
	for _, h := range p.holders {
		k := key{h.Namespace, h.Pod, h.Container, h.Resource}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	slices.SortFunc(order, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.pod, b.pod),
			cmp.Compare(a.container, b.container), cmp.Compare(a.resource, b.resource))
	})
	for _, k := range order {
		b.gauge(&podDevicesDesc, labels{
			label(labelNamespace, k.ns),
			label(labelPod, k.pod),
			label(labelContainer, k.container),
			label("resource", k.resource),
		}, float64(counts[k]))
	}
	return nil
}
