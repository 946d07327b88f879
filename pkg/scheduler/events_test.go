package scheduler

import (
	"strings"
	"testing"

	"k8s.io/client-go/tools/cache"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// withRV sets a GPUNode's resourceVersion.
func withRV(gn *v1alpha1.GPUNode, rv string) *v1alpha1.GPUNode {
	gn.ResourceVersion = rv
	return gn
}

// TestRequeuedPodMeetsTheNewGPUNode reproduces the race between
// kube-scheduler's informer, which calls the queueing hint and requeues the
// pod, and the plugin's own informer, which had not yet delivered the same
// GPUNode update: the pod was retried against the old model and refused
// again. Here the plugin's informer delivers the update only after the
// retry, the order that lost the pod before.
func TestRequeuedPodMeetsTheNewGPUNode(t *testing.T) {
	before := withRV(dgxH100("dgx", t0, 7).obj(), "10")
	h := newHarness(t)
	handler := h.p.gpuNodeHandler(klogFrom(h.ctx))
	handler.OnAdd(before, true)
	h.nodes["dgx"] = h.nodeInfo(before)

	pod := newPod("llm-predictor").container("kserve-container", "nvidia.com/mig-3g.40gb=1").obj()
	if _, st := h.schedule(pod); st.IsSuccess() || !strings.Contains(st.Message(), "no node offers MIG profile 3g.40gb") {
		t.Fatalf("before the relabel: %v, want a refusal for the missing profile", st)
	}

	// The relabel: GPUs 6 and 7 are cut into two 3g.40gb slices each.
	b := dgxH100("dgx", t0)
	b.mig(6, "3g.40gb", "3g.40gb").mig(7, "3g.40gb", "3g.40gb")
	after := withRV(b.obj(), "11")
	// The kubelet advertises the new slices (the node's allocatable, which
	// counting reads); the GPUNode's update is what races.
	h.nodes["dgx"] = h.nodeInfo(after)
	hint, err := h.p.gpuNodeHint(klogFrom(h.ctx), pod, before, after)
	if err != nil || hint != fwk.Queue {
		t.Fatalf("hint = %v, %v; want Queue", hint, err)
	}
	node, st := h.schedule(pod)
	if !st.IsSuccess() || node != "dgx" {
		t.Fatalf("retried before the plugin's informer delivered the update: %s, %v; want dgx", node, st)
	}
	planned := h.devices(pod)
	if len(planned) != 1 || !strings.HasPrefix(planned[0], "MIG-dgx-6-") && !strings.HasPrefix(planned[0], "MIG-dgx-7-") {
		t.Fatalf("planned %v, want one 3g.40gb slice of GPU 6 or 7", planned)
	}

	// The plugin's informer now delivers the old version, then the new one:
	// neither undoes the model (the plan stays, the slices stay).
	handler.OnUpdate(nil, before)
	handler.OnUpdate(before, after)
	if got := h.devices(pod); len(got) != 1 || got[0] != planned[0] {
		t.Fatalf("plan after the late deliveries = %v, want %v", got, planned)
	}
	second := newPod("llm-predictor-1").container("kserve-container", "nvidia.com/mig-3g.40gb=1").obj()
	if _, st := h.schedule(second); !st.IsSuccess() || h.devices(second)[0] == planned[0] {
		t.Fatalf("second 3g.40gb pod: %v with %v (first holds %v)", st, h.devices(second), planned)
	}

	// A GPUNode deleted by the plugin's informer is not brought back by a
	// hint that carries an older version.
	handler.OnDelete(withRV(after.DeepCopy(), "12"))
	if _, err := h.p.gpuNodeHint(klogFrom(h.ctx), pod, before, after); err != nil {
		t.Fatal(err)
	}
	h.p.mu.Lock()
	_, back := h.p.c.nodes["dgx"]
	h.p.mu.Unlock()
	if back {
		t.Error("a hint with version 11 brought back the GPUNode deleted at version 12")
	}
	// A GPUNode created again (a newer version) is taken.
	handler.OnAdd(withRV(after.DeepCopy(), "13"), false)
	h.p.mu.Lock()
	_, back = h.p.c.nodes["dgx"]
	h.p.mu.Unlock()
	if !back {
		t.Error("the GPUNode created again at version 13 was dropped")
	}
	handler.OnDelete(cache.DeletedFinalStateUnknown{Key: "dgx", Obj: withRV(after.DeepCopy(), "14")})
}

// TestDeletedPodFreesItsPlanBeforeTheRetry: the pod-delete hint ends the
// deleted pod's plan, so the pod it requeues meets the freed devices even
// when the plugin's pod handler has not run yet.
func TestDeletedPodFreesItsPlanBeforeTheRetry(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj())
	holder := newPod("holder").container("c", "nvidia.com/gpu=8").obj()
	if _, st := h.schedule(holder); !st.IsSuccess() {
		t.Fatal(st)
	}
	waiting := newPod("waiting").container("c", "nvidia.com/gpu=8").obj()
	if _, st := h.schedule(waiting); st.IsSuccess() {
		t.Fatal("a second 8-GPU pod fit on one DGX")
	}
	if err := h.nodes["dgx"].RemovePod(klogFrom(h.ctx), holder); err != nil {
		t.Fatal(err)
	}
	gone := holder.DeepCopy()
	gone.Spec.NodeName = "dgx"
	hint, err := h.p.podDeleteHint(klogFrom(h.ctx), waiting, gone, nil)
	if err != nil || hint != fwk.Queue {
		t.Fatalf("hint = %v, %v; want Queue", hint, err)
	}
	if _, st := h.schedule(waiting); !st.IsSuccess() {
		t.Fatalf("retried after the holder's deletion: %v", st)
	}
}

// nodeInfo is the scheduler's NodeInfo of a GPUNode's node.
func (h *harness) nodeInfo(gn *v1alpha1.GPUNode) *framework.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(kubeNode(gn, "128", "1Ti"))
	return ni
}
