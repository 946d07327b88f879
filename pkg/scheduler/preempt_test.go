package scheduler

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/scheduler/framework"
)

// TestFilterJudgesWithoutPreemptionVictims plays kube-scheduler's preemption
// dry run on a full DGX: one 4-GPU pod the agent reports, one assumed. A pod
// Tessera filters (4 NVLink-connected GPUs) fits once either is removed
// from a copy of the cycle and of the NodeInfo, and not once it is added
// back; the original cycle still sees the node full, and the model is
// left as it was.
func TestFilterJudgesWithoutPreemptionVictims(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj())
	rep := newPod("rep").container("c", "nvidia.com/gpu=4", "cpu=8").obj()
	asm := newPod("asm").container("c", "nvidia.com/gpu=4", "cpu=8").obj()
	for _, p := range []*corev1.Pod{rep, asm} {
		if _, st := h.schedule(p); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	// The agent reports rep: it leaves the assume cache.
	h.upsert(dgxH100("dgx", t0).alloc("default", "rep", h.devices(rep)...).obj())
	if h.devices(rep) != nil || h.devices(asm) == nil {
		t.Fatalf("rep assumed %v (want reported), asm assumed %v", h.devices(rep), h.devices(asm))
	}
	ni := h.nodes["dgx"]
	model := func() []bool {
		h.p.mu.RLock()
		defer h.p.mu.RUnlock()
		var used []bool
		for _, g := range h.p.c.nodes["dgx"].cache.State().GPUs {
			used = append(used, g.Used)
		}
		return used
	}
	before := model()

	urgent := newPod("urgent").container("c", "nvidia.com/gpu=4", "cpu=8").annotate(AnnotationInterconnect, string(InterconnectNVLink)).obj()
	state := framework.NewCycleState()
	if _, st := h.p.PreFilter(h.ctx, state, urgent, h.nodeInfos()); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	if st := h.p.Filter(h.ctx, state, urgent, ni); st.IsSuccess() {
		t.Fatal("Filter passed the pod on a full node")
	}
	for _, victim := range []*corev1.Pod{rep, asm} {
		t.Run(victim.Name, func(t *testing.T) {
			dry := state.Clone()
			node := ni.Snapshot().(*framework.NodeInfo)
			pi, err := framework.NewPodInfo(victim)
			if err != nil {
				t.Fatal(err)
			}
			if err := node.RemovePod(klog.Background(), victim); err != nil {
				t.Fatal(err)
			}
			if st := h.p.RemovePod(h.ctx, dry, urgent, pi, node); !st.IsSuccess() {
				t.Fatal(st)
			}
			if st := h.p.Filter(h.ctx, dry, urgent, node); !st.IsSuccess() {
				t.Errorf("Filter with %s removed: %v, want the pod to fit", victim.Name, st)
			}
			if st := h.p.Filter(h.ctx, state, urgent, ni); st.IsSuccess() {
				t.Error("the original cycle sees the victim's devices free")
			}
			node.AddPodInfo(pi)
			if st := h.p.AddPod(h.ctx, dry, urgent, pi, node); !st.IsSuccess() {
				t.Fatal(st)
			}
			if st := h.p.Filter(h.ctx, dry, urgent, node); st.IsSuccess() {
				t.Errorf("Filter with %s added back: the pod fits", victim.Name)
			}
			if after := model(); !slices.Equal(after, before) {
				t.Errorf("GPUs used after the dry run %v, before %v", after, before)
			}
		})
	}
	// The dry runs left the model as it was: the pods it holds still
	// schedule as before (the harness checks Filter against counting).
	if _, st := h.schedule(newPod("more").container("c", "nvidia.com/gpu=1").obj()); st.IsSuccess() {
		t.Error("a pod fits on the full node after the dry runs")
	}
}
