// Package plans tells the gpu-agent's device plugin which devices
// gpu-scheduler planned for the pods bound to its node that wait for their
// devices (deviceplugin.PlanSource): the kubelet's GetPreferredAllocation
// request does not say which pod it allocates for, so the plugin asks here
// which pending pods carry a plan (gpu.tessera.dev/devices), what they
// want, what the kubelet has given them and which one the kubelet is
// admitting.
//
// It lists the node's pods from the API server when asked, once per
// preferred allocation, and keeps nothing: a pod watch would hold every pod
// of the node in the agent's memory for a look-up made only at admission.
// It reads the kubelet's view through the PodResources cache, refreshed on
// each call. It must not import k8s.io/kubernetes.
package plans

import (
	"context"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// PodLister lists the pods bound to a node (*kube.Client).
type PodLister interface {
	ListNodePods(ctx context.Context, nodeName string) (*v1.PodList, error)
}

// Kubelet is the kubelet's PodResources view (*podresources.Cache).
type Kubelet interface {
	Refresh(ctx context.Context) error
	Pods() []podresources.PodRef
	All() []podresources.Holder
}

// Source is a deviceplugin.PlanSource for one node.
type Source struct {
	node    string
	pods    PodLister
	kubelet Kubelet
}

var _ deviceplugin.PlanSource = (*Source)(nil)

// New returns the plan source of node nodeName.
func New(nodeName string, pods PodLister, kubelet Kubelet) *Source {
	return &Source{node: nodeName, pods: pods, kubelet: kubelet}
}

// PendingPlans returns the plans of the node's pods that are neither ended
// nor being deleted and hold fewer devices than they ask for, with what the
// kubelet lists of them now. An unreachable kubelet or API server is an
// error: without knowing what pods hold, no plan can be trusted.
func (s *Source) PendingPlans(ctx context.Context) ([]deviceplugin.Plan, error) {
	if err := s.kubelet.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("reading what the kubelet allocated: %w", err)
	}
	list, err := s.pods.ListNodePods(ctx, s.node)
	if err != nil {
		return nil, err
	}
	listed := map[podresources.PodRef]bool{}
	for _, p := range s.kubelet.Pods() {
		listed[p] = true
	}
	held := map[podresources.PodRef]map[string]int64{}
	for _, h := range s.kubelet.All() {
		ref := podresources.PodRef{Namespace: h.Namespace, Name: h.Pod}
		if held[ref] == nil {
			held[ref] = map[string]int64{}
		}
		held[ref][h.Resource]++
	}
	var out []deviceplugin.Plan
	for i := range list.Items {
		pod := &list.Items[i]
		v, ok := pod.Annotations[v1alpha1.AnnotationDevices]
		if !ok || pod.DeletionTimestamp != nil || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			continue
		}
		ref := podresources.PodRef{Namespace: pod.Namespace, Name: pod.Name}
		p := deviceplugin.Plan{
			Pod: ref.Namespace + "/" + ref.Name, Created: pod.CreationTimestamp.Time,
			Devices: v1alpha1.ParseDevices(v), Want: wants(pod), Held: held[ref], Admitting: listed[ref],
		}
		pending := false
		for r, n := range p.Want {
			pending = pending || p.Held[r] < n
		}
		if pending && len(p.Devices) > 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// wants is what the pod's containers ask of each extended resource: the app
// containers and the restartable init containers (sidecars) together; the
// devices of an ordinary init container are reused by the app containers.
func wants(pod *v1.Pod) map[string]int64 {
	out := map[string]int64{}
	add := func(c *v1.Container) {
		for name, q := range c.Resources.Limits {
			if strings.Contains(string(name), "/") {
				out[string(name)] += q.Value()
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			add(c)
		}
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i])
	}
	return out
}
