package scheduler

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// EventsToRegister requeues a pod Tessera rejected when a GPU may have
// freed or appeared: a GPUNode added, or updated with more free devices,
// more healthy GPUs, other resources or a heartbeat back from stale; a pod
// holding GPUs deleted (this also covers a pod the scheduler un-assumes);
// a node added. Heartbeat-only GPUNode updates do not requeue.
func (p *Plugin) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: GPUNodeEvent, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: p.gpuNodeHint},
		{Event: fwk.ClusterEvent{Resource: fwk.Pod, ActionType: fwk.Delete}, QueueingHintFn: p.podDeleteHint},
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add}},
	}, nil
}

// gpuNodeHint requeues a pod Tessera rejected when the GPUNode change may
// make it schedulable. It first takes the new GPUNode into the plugin's
// model: kube-scheduler calls the hint from its own informer, which does not
// wait for the plugin's, and a pod requeued before the plugin's informer
// delivered the change would be retried against the old model and refused
// again (a pod waiting for a MIG profile that a relabel just created then
// waited for the 5-minute flush).
func (p *Plugin) gpuNodeHint(logger klog.Logger, pod *corev1.Pod, oldObj, newObj any) (fwk.QueueingHint, error) {
	newGN, err := asGPUNode(newObj)
	if err != nil {
		return fwk.Queue, err
	}
	if newGN != nil {
		p.mu.Lock()
		p.applyGPUNode(logger, newGN)
		p.mu.Unlock()
	}
	oldGN, err := asGPUNode(oldObj)
	if err != nil || oldGN == nil {
		return fwk.Queue, nil //nolint:nilerr // an add, or an old object we cannot read: requeue
	}
	now := p.clock.Now()
	o, n := freeDevices(oldGN), freeDevices(newGN)
	switch {
	case n.free > o.free, n.healthy > o.healthy, n.resources != o.resources:
		logger.V(5).Info("GPUNode change may make the pod schedulable", "pod", klog.KObj(pod), "gpunode", newGN.Name)
		return fwk.Queue, nil
	case now.Sub(oldGN.Status.HeartbeatTime.Time) > p.args.StaleAfter.Duration && now.Sub(newGN.Status.HeartbeatTime.Time) <= p.args.StaleAfter.Duration:
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

// freeCount summarises a GPUNode for queueing hints.
type freeCount struct {
	free, healthy int
	resources     string
}

func freeDevices(gn *v1alpha1.GPUNode) freeCount {
	var c freeCount
	var res []string
	for _, g := range gn.Status.GPUs {
		if g.Health == v1alpha1.Healthy {
			c.healthy++
		}
		if g.Sharing != nil && g.Health == v1alpha1.Healthy {
			c.free += int(g.Sharing.Replicas)
			res = append(res, g.Sharing.Resource+"+"+g.Sharing.WholeResource)
		}
		for _, sl := range g.MIGSlices {
			if sl.Sharing != nil && sl.Health == v1alpha1.Healthy {
				c.free += int(sl.Sharing.Replicas)
				res = append(res, sl.Sharing.Resource)
			}
		}
	}
	for _, a := range gn.Status.Allocations {
		c.free -= len(a.DeviceIDs)
	}
	c.resources = strings.Join(res, ",")
	return c
}

func asGPUNode(obj any) (*v1alpha1.GPUNode, error) {
	switch o := obj.(type) {
	case nil:
		return nil, nil
	case *v1alpha1.GPUNode:
		return o, nil
	case *unstructured.Unstructured:
		gn := &v1alpha1.GPUNode{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, gn); err != nil {
			return nil, fmt.Errorf("reading gpunode %s: %w", o.GetName(), err)
		}
		return gn, nil
	case cache.DeletedFinalStateUnknown:
		return asGPUNode(o.Obj)
	}
	return nil, fmt.Errorf("want a gpunode, got %T", obj)
}

// podDeleteHint requeues when a deleted pod held GPUs on a node. Like
// gpuNodeHint it first ends the pod's plan in the assume cache, so that the
// requeued pod does not meet the deleted pod's devices still held there.
func (p *Plugin) podDeleteHint(_ klog.Logger, _ *corev1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	old, ok := oldObj.(*corev1.Pod)
	if !ok || old.Spec.NodeName == "" {
		return fwk.QueueSkip, nil
	}
	if holdsGPU(old) {
		p.mu.Lock()
		p.c.forget(old.UID)
		p.mu.Unlock()
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

func holdsGPU(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for n := range c.Resources.Requests {
				if strings.HasPrefix(string(n), "nvidia.com/") {
					return true
				}
			}
		}
	}
	return false
}

// signKey is Tessera's signature fragment: the pod's GPU demand as parsed.
const signKey = "gpu.tessera.dev/PodDemand()"

// SignPod keeps 1.36's opportunistic batching on for GPU pods (and for
// CPU-only pods, which Tessera scores too). A pod's
// Tessera verdicts and scores depend on the pod's GPU demand (resource,
// count, CPU and memory, interconnect, preference annotation), its node
// affinity and nodeSelector on the product, and per-node state that a
// placement changes only on the node it chose — which batching already
// treats as changed. Unsignable, because their outcome depends on
// cluster-wide state that the previous placement may have changed:
//   - a pod whose required affinity uses NotIn or Exists on the product: its
//     allowed products are "every product the cluster has but …";
//   - a pod of a gang (spec.schedulingGroup): the gang's members are placed
//     together and an Unreserve of one frees devices on other nodes;
//   - a pod the parser refuses (its refusal names the cluster's best);
//   - a pod signed when the next observation refreshes the learned target
//     workload (every TargetEpoch placements, and after 1, 2, 4, ...
//     before), which changes every node's score: a batch would place it
//     on a ranking one refresh old. The signature is taken when the pod is
//     queued, so this is exact for pods that arrive one at a time (the
//     trace replay through the scheduler) and a best effort for a burst,
//     whose batched pods may still cross a refresh.
//
// The scarcity costs (product-constrained pods in the learned target, and
// the multi-GPU shapes a node could still host) also depend on the whole
// cluster's free capacity, which a batch's ranking does not follow; we
// accept that: a batch holds pods of one shape, and one placement moves
// those totals by a node's worth at most.
func (p *Plugin) SignPod(_ context.Context, pod *corev1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	p.mu.RLock()
	d, err := ReadPod(pod, p.c.isShared)
	refresh := p.c.scorer.NextObservationRefreshes()
	p.mu.RUnlock()
	if err != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, "the pod's GPU demand is refused")
	}
	if refresh {
		return nil, fwk.NewStatus(fwk.Unschedulable, "the next placement refreshes the learned target workload")
	}
	if pod.Spec.SchedulingGroup != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, "gang members are placed together")
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, e := range t.MatchExpressions {
				if e.Key == scoring.ProductLabel && (e.Operator == corev1.NodeSelectorOpNotIn || e.Operator == corev1.NodeSelectorOpExists) {
					return nil, fwk.NewStatus(fwk.Unschedulable, "allowed products depend on the cluster's products")
				}
			}
		}
	}
	aff, err := fwk.NodeAffinitySigner(pod)
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	return []fwk.SignFragment{
		{Key: signKey, Value: struct {
			Resource     corev1.ResourceName
			Count        int64
			CPU, Memory  int64
			Interconnect Interconnect
			Preferred    []string
			Selector     string
		}{d.Resource, d.Count, d.CPU, d.Memory, d.Interconnect, d.Preferred, d.selectorProduct}},
		{Key: fwk.NodeAffinitySignerName, Value: aff},
	}, nil
}

// gpuNodeHandler feeds GPUNode changes into the plugin's model.
func (p *Plugin) gpuNodeHandler(logger klog.Logger) cache.ResourceEventHandler {
	upsert := func(obj any) {
		gn, err := asGPUNode(obj)
		if err != nil || gn == nil {
			logger.Error(err, "Unreadable GPUNode event")
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.applyGPUNode(logger, gn)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { upsert(obj) },
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(obj any) {
			gn, err := asGPUNode(obj)
			if err != nil || gn == nil {
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			p.c.saw(gn.Name, gn.ResourceVersion)
			p.c.remove(gn.Name)
		},
	}
}

// applyGPUNode takes a GPUNode version into the model unless the model has
// that version, a newer one or the node's deletion already. GPUNodes reach
// the plugin on two paths that do not wait for each other, its own informer
// and kube-scheduler's (through gpuNodeHint): each applies what it sees
// first, and the later delivery of the same or an older version is dropped.
// Call with the lock held.
func (p *Plugin) applyGPUNode(logger klog.Logger, gn *v1alpha1.GPUNode) {
	if !p.c.isNewer(gn.Name, gn.ResourceVersion) {
		return
	}
	p.c.saw(gn.Name, gn.ResourceVersion)
	p.c.upsert(logger, gn)
}

// isNewer reports whether resourceVersion rv of node's GPUNode is later than
// what the model has seen of it; a version that cannot be compared (none,
// or not a number) counts as newer.
func (c *cluster) isNewer(node, rv string) bool {
	seen, ok := c.versions[node]
	if !ok || seen == "" || rv == "" {
		return true
	}
	cmp, err := resourceversion.CompareResourceVersion(rv, seen)
	return err != nil || cmp > 0
}

// saw records rv as the newest version of node's GPUNode the model has seen.
func (c *cluster) saw(node, rv string) {
	if c.isNewer(node, rv) {
		c.versions[node] = rv
	}
}

// podHandler ends the assume-cache entries of pods that end, and restores
// the plans of bound pods the agent has not reported yet from their
// AnnotationDevices (after a restart or a leader change).
func (p *Plugin) podHandler(logger klog.Logger) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.onPod(logger, obj) },
		UpdateFunc: func(_, obj any) { p.onPod(logger, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				p.mu.Lock()
				p.c.forget(pod.UID)
				p.mu.Unlock()
			}
		},
	}
}

func (p *Plugin) onPod(logger klog.Logger, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	// Every pod event of the cluster comes here: the write lock, which
	// stops every Filter, is taken only when the model changes.
	ended := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil
	v, planned := pod.Annotations[AnnotationDevices]
	if !ended && (!planned || pod.Spec.NodeName == "") {
		return
	}
	p.mu.RLock()
	known := p.c.assumed[pod.UID] != nil
	p.mu.RUnlock()
	if ended != known {
		// An ended pod the assume cache does not hold, or a running one
		// it holds already.
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ended {
		p.c.forget(pod.UID)
		return
	}
	if p.c.assumed[pod.UID] != nil {
		return
	}
	p.c.restore(logger, pod, v1alpha1.ParseDevices(v))
}

// restore puts a bound pod's planned devices back into the assume cache
// unless the agent already reports the pod.
func (c *cluster) restore(logger klog.Logger, pod *corev1.Pod, devices []string) {
	e := c.nodes[pod.Spec.NodeName]
	if e == nil || e.model == nil {
		return
	}
	ref := podRef{namespace: pod.Namespace, name: pod.Name, uid: pod.UID}
	if _, ok := e.model.reportedFor(ref); ok {
		return
	}
	d, err := ReadPod(pod, c.isShared)
	if err != nil || d.Resource == "" {
		return
	}
	mode, ok := e.model.resources[d.Resource]
	if !ok {
		return
	}
	sd, err := d.demandOn(mode, nil, nil)
	if err != nil {
		return
	}
	r, err := c.scorer.Compile(sd)
	if err != nil {
		return
	}
	ap := &assumedPod{ref: ref, node: pod.Spec.NodeName, req: r, kind: mode.kind, devices: devices}
	if err := c.apply(e, ap); err != nil {
		logger.Info("Cannot restore the planned devices of a bound pod", "pod", klog.KObj(pod), "devices", devices, "err", err)
		return
	}
	c.assumed[pod.UID] = ap
	c.scorer.Observe(r)
}
