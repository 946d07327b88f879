package scheduler

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Preemption. kube-scheduler's DefaultPreemption tries a node by removing
// the pods of a lower priority from a copy of its NodeInfo, running the
// Filter plugins on it, and adding the victims back one by one while the
// pod still fits. It tells the PreFilter plugins through their extensions
// (RemovePod, AddPod) on a copy of the cycle. Tessera's Filter judges from
// its own model, where the victims still hold their devices: without the
// extensions a pod Tessera filters (share units, a required NVLink set, an
// allowed product) could never preempt the GPU holders it outranks. So
// the cycle keeps the pods removed per node (cycleData.removed), and Filter
// judges such a node with their devices free (filterWithout).
//
// Pods added that were not removed — the nominated pods kube-scheduler
// adds before filtering — are not modelled: Tessera does not know which
// devices they will take (counting still sees them).

// PreFilterExtensions implements fwk.PreFilterPlugin.
func (p *Plugin) PreFilterExtensions() fwk.PreFilterExtensions { return p }

// RemovePod records, in this copy of the cycle, that a preemption dry run
// removed podInfoToRemove from the node.
func (p *Plugin) RemovePod(_ context.Context, state fwk.CycleState, _ *corev1.Pod, podInfoToRemove fwk.PodInfo, nodeInfo fwk.NodeInfo) *fwk.Status {
	cd := getCycle(state)
	if cd == nil || cd.d.Resource == "" || nodeInfo.Node() == nil {
		return nil
	}
	if cd.removed == nil {
		cd.removed = map[string][]*corev1.Pod{}
	}
	name := nodeInfo.Node().Name
	cd.removed[name] = append(slices.Clip(cd.removed[name]), podInfoToRemove.GetPod())
	return nil
}

// AddPod takes back a removal when the dry run adds a victim back.
func (p *Plugin) AddPod(_ context.Context, state fwk.CycleState, _ *corev1.Pod, podInfoToAdd fwk.PodInfo, nodeInfo fwk.NodeInfo) *fwk.Status {
	cd := getCycle(state)
	if cd == nil || nodeInfo.Node() == nil {
		return nil
	}
	name, uid := nodeInfo.Node().Name, podInfoToAdd.GetPod().UID
	victims := cd.removed[name]
	i := slices.IndexFunc(victims, func(v *corev1.Pod) bool { return v.UID == uid })
	if i < 0 {
		return nil
	}
	cd.removed[name] = slices.Delete(slices.Clone(victims), i, i+1)
	return nil
}

// filterWithout is Filter's verdict on a node from which a preemption dry
// run removed victims: the victims' devices are given back in the node's
// cache and the free CPU and memory are the dry run's NodeInfo's, the pod
// is judged, and the node is restored, all under the write lock.
func (p *Plugin) filterWithout(ctx context.Context, cd *cycleData, pod *corev1.Pod, ni fwk.NodeInfo, victims []*corev1.Pod) *fwk.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.c.entryOf(ni.Node())
	if !p.c.freshEntry(e, p.clock.Now()) {
		return nil
	}
	mode, r, st, ok := p.nodeRequest(cd, e)
	if !ok {
		return st
	}
	res := p.scoreWithout(klog.FromContext(ctx), e, r, ni, victims)
	if res.Err != nil {
		klog.FromContext(ctx).V(5).Info("Node refused with the victims gone", "pod", klog.KObj(pod), "node", ni.Node().Name, "victims", len(victims), "reason", res.Err)
		// Worded from the dry run's NodeInfo, and the cluster-wide hint
		// from the model restored.
		if cpu, mem := nodeInfoFree(ni); cpu < cd.d.CPU || mem < cd.d.Memory {
			return fwk.NewStatus(fwk.Unschedulable, noCPU)
		}
		return fwk.NewStatus(fwk.Unschedulable, p.hint(cd, mode))
	}
	return nvlinkVerdict(cd, mode, res)
}

// scoreWithout scores r on the node with the victims' devices given back
// and the dry run's free CPU and memory, and restores the node. Call with
// the write lock held.
func (p *Plugin) scoreWithout(logger klog.Logger, e *nodeEntry, r *scoring.Request, ni fwk.NodeInfo, victims []*corev1.Pod) scoring.Result {
	var given []held
	st := e.cache.State()
	cpu0, mem0 := st.CPUFree, st.MemFree
	defer func() {
		for _, h := range slices.Backward(given) {
			if err := e.cache.Assume(h.req, h.a); err != nil {
				// Forget just gave these devices back: they are free.
				logger.Error(err, "Taking a preemption victim's devices back", "node", e.model.name, "pod", klog.KObj(h.pod))
			}
		}
		_ = e.cache.SetFree(cpu0, mem0)
	}()
	for _, v := range victims {
		h, ok := p.heldBy(e, v)
		if !ok {
			continue
		}
		if err := e.cache.Forget(h.req, h.a); err != nil {
			logger.V(4).Info("A preemption victim's devices are not held in the model", "node", e.model.name, "pod", klog.KObj(v), "err", err)
			continue
		}
		given = append(given, h)
	}
	cpu, mem := nodeInfoFree(ni)
	_ = e.cache.SetFree(cpu, mem)
	return p.c.scorer.Score(e.cache, r)
}

// held is what a pod holds on a node: its request and devices.
type held struct {
	pod *corev1.Pod
	req *scoring.Request
	a   scoring.Assignment
}

// heldBy finds what a pod holds on the node in the model: its plan while
// assumed, else the devices the agent reports for it. Call with the lock
// held.
func (p *Plugin) heldBy(e *nodeEntry, pod *corev1.Pod) (held, bool) {
	if ap := p.c.assumed[pod.UID]; ap != nil {
		return held{pod: pod, req: ap.req, a: ap.a}, ap.applied && ap.node == e.model.name
	}
	devs, ok := e.model.reportedFor(podRef{namespace: pod.Namespace, name: pod.Name, uid: pod.UID})
	if !ok {
		return held{}, false
	}
	d, err := ReadPod(pod, p.c.isShared)
	if err != nil || d.Resource == "" {
		return held{}, false
	}
	mode, has := e.model.mode(d.Resource)
	if !has {
		return held{}, false
	}
	sd, err := d.demandOn(mode, nil, nil)
	if err != nil {
		return held{}, false
	}
	r, err := p.c.scorer.Compile(sd)
	if err != nil {
		return held{}, false
	}
	a, err := e.model.assignment(mode.kind, devs)
	if err != nil {
		return held{}, false
	}
	return held{pod: pod, req: r, a: a}, true
}
