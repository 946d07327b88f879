package scheduler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-base/metrics/testutil"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func TestBuildModel(t *testing.T) {
	tests := []struct {
		name    string
		gn      *v1alpha1.GPUNode
		check   func(t *testing.T, m *nodeModel)
		wantErr string
	}{
		{name: "dgx h100 with two mig gpus and an allocation", gn: dgxH100("dgx", t0, 6, 7).alloc("ml", "train", "GPU-dgx-0", "GPU-dgx-1").obj(),
			check: func(t *testing.T, m *nodeModel) {
				if got := m.resources["nvidia.com/gpu"]; got.kind != scoring.KindWhole {
					t.Errorf("nvidia.com/gpu is %+v, want whole", got)
				}
				if got := m.resources["nvidia.com/mig-1g.10gb"]; got != (resMode{kind: scoring.KindMIG, profile: "1g.10gb"}) {
					t.Errorf("mig resource is %+v", got)
				}
				st := m.state
				if !st.GPUs[0].Used || !st.GPUs[1].Used || st.GPUs[2].Used || st.GPUs[6].Mode != scoring.ModeMIG || len(st.GPUs[6].MIGSlices) != 7 {
					t.Errorf("state: %+v", st.GPUs)
				}
				if l := st.Topology.Links[0][5]; l.NVLinks != 18 || !l.NVSwitch {
					t.Errorf("link 0-5 = %+v", l)
				}
				if got, _ := m.reportedFor(podRef{namespace: "ml", name: "train"}); !slices.Equal(got, []string{"GPU-dgx-0", "GPU-dgx-1"}) {
					t.Errorf("reported = %v", got)
				}
			}},
		{name: "time-shared gpus", gn: sharedNode("ts", t0, 2, 4).alloc("nb", "a", "GPU-ts-1::0", "GPU-ts-1::3").obj(),
			check: func(t *testing.T, m *nodeModel) {
				if m.resources["nvidia.com/gpu.shared"].kind != scoring.KindShare || m.shareUnits["nvidia.com/gpu.shared"] != 4 {
					t.Errorf("resources %+v units %v", m.resources, m.shareUnits)
				}
				if g := m.state.GPUs[1]; g.ShareFree != 2 || g.ShareTotal != 4 {
					t.Errorf("gpu 1: %+v", g)
				}
			}},
		{name: "unhealthy gpu", gn: l40sServer("l", t0).unhealthy(2, "XID 79").obj(), check: func(t *testing.T, m *nodeModel) {
			if m.state.GPUs[2].Healthy || !m.state.GPUs[1].Healthy {
				t.Errorf("health: %+v", m.state.GPUs)
			}
		}},
		{name: "a share count on a mig gpu", gn: func() *v1alpha1.GPUNode {
			gn := dgxH100("dgx", t0, 3).obj()
			gn.Status.GPUs[3].Sharing = &v1alpha1.Sharing{Resource: "nvidia.com/gpu", Replicas: 2}
			return gn
		}(), wantErr: "gpu 3: mig is enabled and the whole gpu is advertised as nvidia.com/gpu (2 units)"},
		{name: "an allocation naming an unknown device", gn: l40sServer("l", t0).alloc("a", "b", "GPU-nope").obj(),
			wantErr: `allocation of pod a/b container c names device "GPU-nope", which the node does not have`},
		{name: "a link matrix that does not match", gn: func() *v1alpha1.GPUNode {
			gn := l40sServer("l", t0).obj()
			gn.Status.Links = gn.Status.Links[:3]
			return gn
		}(), wantErr: "links: link matrix has 3 rows, want 4"},
		{name: "two shared resources", gn: func() *v1alpha1.GPUNode {
			gn := sharedNode("ts", t0, 2, 4).obj()
			gn.Status.GPUs[1].Sharing.Resource = "nvidia.com/gpu-tiny"
			return gn
		}(), wantErr: "one shared resource per node is modelled"},
		{name: "gpus shared and also advertised whole", gn: wholeAndShared("ws", t0, 3, 1000).alloc("a", "whole", "GPU-ws-0").alloc("a", "nb", "GPU-ws-1::0", "GPU-ws-1::1").obj(),
			check: func(t *testing.T, m *nodeModel) {
				if got := m.resources["nvidia.com/gpu"]; got != (resMode{kind: scoring.KindWhole}) {
					t.Errorf("nvidia.com/gpu is %+v, want whole", got)
				}
				if got := m.resources["nvidia.com/gpu.shared"]; got != (resMode{kind: scoring.KindShare, units: 1000}) {
					t.Errorf("nvidia.com/gpu.shared is %+v, want shares of 1000 units", got)
				}
				g := m.state.GPUs
				if !g[0].Used || g[0].ShareFree != 0 || g[1].Used || g[1].ShareFree != 998 || g[2].ShareFree != 1000 || !g[2].ShareWhole || g[2].Mode != scoring.ModeShared {
					t.Errorf("state: %+v", g)
				}
			}},
		{name: "a gpu held whole and in units", gn: wholeAndShared("ws", t0, 1, 1000).alloc("a", "nb", "GPU-ws-0::0").alloc("a", "whole", "GPU-ws-0").obj(),
			wantErr: "allocations hold gpu GPU-ws-0 whole and 1 of its 1000 units"},
		{name: "a gpu held in units and whole", gn: wholeAndShared("ws", t0, 1, 1000).alloc("a", "whole", "GPU-ws-0").alloc("a", "nb", "GPU-ws-0::0").obj(),
			wantErr: "allocations hold gpu GPU-ws-0 whole and units of it"},
		{name: "a whole resource beside a gpu that is not shared", gn: wholeAndShared("ws", t0, 1, 1).obj(), wantErr: "gpu 0: advertised whole as nvidia.com/gpu beside 1 units of nvidia.com/gpu.shared"},
		{name: "more units held than the gpu has", gn: sharedNode("ts", t0, 1, 2).alloc("a", "b", "GPU-ts-0::0", "GPU-ts-0::1", "GPU-ts-0::2").obj(),
			wantErr: "allocations hold more units of gpu GPU-ts-0 than its 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := buildModel(tt.gn)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("buildModel error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("buildModel: %v", err)
			}
			tt.check(t, m)
		})
	}
}

// harness runs the plugin's extension points the way the framework does,
// with the framework's own CycleState and NodeInfo.
type harness struct {
	t     *testing.T
	ctx   context.Context
	p     *Plugin
	clock *clocktesting.FakeClock
	nodes map[string]*framework.NodeInfo
}

func newHarness(t *testing.T, gns ...*v1alpha1.GPUNode) *harness {
	_, ctx := ktesting.NewTestContext(t)
	clk := clocktesting.NewFakeClock(t0)
	p, err := newPlugin(DefaultArgs(), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, p: p, clock: clk, nodes: map[string]*framework.NodeInfo{}}
	p.nodeInfo = func(name string) (fwk.NodeInfo, error) {
		if ni, ok := h.nodes[name]; ok {
			return ni, nil
		}
		return nil, fmt.Errorf("node %q not found", name)
	}
	for _, gn := range gns {
		h.upsert(gn)
		ni := framework.NewNodeInfo()
		ni.SetNode(kubeNode(gn, "128", "1Ti"))
		h.nodes[gn.Name] = ni
	}
	return h
}

func (h *harness) upsert(gn *v1alpha1.GPUNode) {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	h.p.c.upsert(klogFrom(h.ctx), gn)
}

func (h *harness) nodeInfos() []fwk.NodeInfo {
	var out []fwk.NodeInfo
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range h.nodes {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, h.nodes[n])
	}
	return out
}

// schedule runs one cycle up to Reserve and returns the chosen node (highest
// normalized score, ties by name) or the status that stopped it. For a pod
// whose Filter PreFilter skips (countable), counting filters — kube-
// scheduler's own NodeResourcesFit — and the harness checks on every node
// that Tessera's Filter would have said the same.
func (h *harness) schedule(pod *corev1.Pod) (string, *fwk.Status) {
	state := framework.NewCycleState()
	res, st := h.p.PreFilter(h.ctx, state, pod, h.nodeInfos())
	cd := getCycle(state)
	counting := cd != nil && cd.countable
	if !st.IsSuccess() && !st.IsSkip() {
		return "", st
	}
	if st.IsSkip() && res != nil {
		h.t.Errorf("pod %s: PreFilter skips and names nodes %v: the framework would drop them", pod.Name, sets.List(res.NodeNames))
	}
	var feasible []fwk.NodeInfo
	var reasons []string
	for _, ni := range h.nodeInfos() {
		if !res.AllNodes() && !res.NodeNames.Has(ni.Node().Name) {
			// Left out by PreFilter: counting refuses the node for the
			// pod's GPUs, and either Filter would refuse it as advertising
			// no such resource or no preemption could give it room.
			if !countingRefusesGPUs(pod, cd, ni) {
				h.t.Errorf("pod %s: PreFilter left out node %s, which counting passes for %s", pod.Name, ni.Node().Name, cd.d.Resource)
			}
			why := h.filterUnskipped(state, pod, ni)
			advertisesNo := why.Code() == fwk.UnschedulableAndUnresolvable && strings.HasPrefix(why.Message(), "node advertises no ")
			if !advertisesNo && preemptionCouldMakeRoom(pod, cd, ni) {
				h.t.Errorf("pod %s: PreFilter left out node %s, where it could preempt a pod holding %s (Filter: %v)", pod.Name, ni.Node().Name, cd.d.Resource, why)
			}
			reasons = append(reasons, "node(s) didn't satisfy plugin(s) [TesseraGPU]")
			continue
		}
		st := h.p.Filter(h.ctx, state, pod, ni)
		if counting {
			if !st.IsSuccess() {
				h.t.Errorf("pod %s on node %s: Filter %v for a pod counting filters", pod.Name, ni.Node().Name, st)
			}
			st = h.filterUnskipped(state, pod, ni)
			var fit *fwk.Status
			if short := noderesources.Fits(pod, ni, nil, noderesources.ResourceRequestsOptions{}); len(short) > 0 {
				fit = fwk.NewStatus(fwk.Unschedulable, "Insufficient "+string(short[0].ResourceName))
			}
			// On a node Tessera judges, counting and Filter agree (on
			// others Filter gives no verdict and counting decides).
			if fit.IsSuccess() != st.IsSuccess() && h.judges(ni) {
				h.t.Errorf("pod %s on node %s: counting says %v, Tessera's Filter (skipped) %v", pod.Name, ni.Node().Name, fit, st)
			}
			st = fit
		} else {
			// Asked again, Filter answers from the cached verdict
			// (filterCached), which must be the same.
			h.p.mu.RLock()
			again, done := h.p.filterCached(cd, ni, h.clock.Now())
			h.p.mu.RUnlock()
			if cd != nil && cd.d.Resource != "" && (!done || again.Code() != st.Code() || again.Message() != st.Message()) {
				h.t.Errorf("pod %s on node %s: cached Filter verdict %v (answered: %v), computed %v", pod.Name, ni.Node().Name, again, done, st)
			}
		}
		if st.IsSuccess() {
			feasible = append(feasible, ni)
		} else {
			reasons = append(reasons, st.Message())
		}
	}
	if len(feasible) == 0 {
		// Words for the nodes left out, and for a pod counting filtered.
		words := 0
		if !res.AllNodes() {
			words = 1
		}
		if _, pst := h.p.PostFilter(h.ctx, state, pod, nil); pst.Code() != fwk.Unschedulable || !counting && len(pst.Reasons()) != words || len(pst.Reasons()) < words {
			h.t.Errorf("pod %s: PostFilter %v, want Unschedulable with %d words for the nodes left out, and more only for a pod counting filtered", pod.Name, pst, words)
		} else {
			reasons = append(reasons, pst.Reasons()...)
		}
		return "", fwk.NewStatus(fwk.Unschedulable, reasons...)
	}
	if len(feasible) == 1 {
		// kube-scheduler scores no node when one is feasible.
		return h.reserve(state, pod, feasible[0].Node().Name)
	}
	if st := h.p.PreScore(h.ctx, state, pod, feasible); !st.IsSuccess() {
		return "", st
	}
	var scores fwk.NodeScoreList
	for _, ni := range feasible {
		s, st := h.p.Score(h.ctx, state, pod, ni)
		if !st.IsSuccess() {
			return "", st
		}
		scores = append(scores, fwk.NodeScore{Name: ni.Node().Name, Score: s})
	}
	if st := h.p.NormalizeScore(h.ctx, state, pod, scores); !st.IsSuccess() {
		return "", st
	}
	best := scores[0]
	for _, s := range scores[1:] {
		if s.Score > best.Score {
			best = s
		}
	}
	return h.reserve(state, pod, best.Name)
}

// countingRefusesGPUs reports whether NodeResourcesFit's count refuses the
// node for the pod's GPU resource.
func countingRefusesGPUs(pod *corev1.Pod, cd *cycleData, ni fwk.NodeInfo) bool {
	for _, short := range noderesources.Fits(pod, ni, nil, noderesources.ResourceRequestsOptions{}) {
		if short.ResourceName == cd.d.Resource {
			return true
		}
	}
	return false
}

// preemptionCouldMakeRoom reports whether the pod could preempt, on the
// node, a pod that holds its GPU resource: one of a lower priority, and the
// pod's preemption policy allows it (DefaultPreemption's victims).
func preemptionCouldMakeRoom(pod *corev1.Pod, cd *cycleData, ni fwk.NodeInfo) bool {
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		return false
	}
	for _, pi := range ni.GetPods() {
		q := resourcehelper.PodRequests(pi.GetPod(), resourcehelper.PodResourcesOptions{})[cd.d.Resource]
		if !q.IsZero() && corev1helpers.PodPriority(pi.GetPod()) < corev1helpers.PodPriority(pod) {
			return true
		}
	}
	return false
}

// judges reports whether Tessera judges the node (a fresh GPUNode).
func (h *harness) judges(ni fwk.NodeInfo) bool {
	h.p.mu.RLock()
	defer h.p.mu.RUnlock()
	return h.p.c.freshEntry(h.p.c.entryOf(ni.Node()), h.clock.Now())
}

// filterUnskipped is Tessera's Filter verdict as if the pod's Filter were
// not skipped (countable).
func (h *harness) filterUnskipped(state fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) *fwk.Status {
	cd := getCycle(state)
	if cd == nil || !cd.countable {
		return h.p.Filter(h.ctx, state, pod, ni)
	}
	cd.countable = false
	defer func() { cd.countable = true }()
	return h.p.Filter(h.ctx, state, pod, ni)
}

func (h *harness) reserve(state fwk.CycleState, pod *corev1.Pod, node string) (string, *fwk.Status) {
	if st := h.p.Reserve(h.ctx, state, pod, node); !st.IsSuccess() {
		return "", st
	}
	h.nodes[node].AddPod(pod)
	return node, nil
}

// unreserve gives a reserved pod's devices back, as kube-scheduler does
// when a later extension point fails: Tessera's Unreserve and the
// scheduler's cache forgetting the pod.
func (h *harness) unreserve(pod *corev1.Pod, node string) {
	h.p.Unreserve(h.ctx, nil, pod, node)
	if err := h.nodes[node].RemovePod(klog.FromContext(h.ctx), pod); err != nil {
		h.t.Fatalf("removing pod %s from node %s: %v", pod.Name, node, err)
	}
}

func (h *harness) devices(pod *corev1.Pod) []string {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	if ap := h.p.c.assumed[pod.UID]; ap != nil {
		return ap.devices
	}
	return nil
}

func TestBackToBackPodsNeverPlanTheSameGPU(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj())
	seen := map[string]string{}
	for i := range 8 {
		pod := newPod("p"+string(rune('a'+i))).container("c", "nvidia.com/gpu=1", "cpu=1").obj()
		node, st := h.schedule(pod)
		if !st.IsSuccess() {
			t.Fatalf("pod %d: %v", i, st)
		}
		devs := h.devices(pod)
		if node != "dgx" || len(devs) != 1 {
			t.Fatalf("pod %d on %s with %v", i, node, devs)
		}
		if other, dup := seen[devs[0]]; dup {
			t.Fatalf("pod %s planned %s, already planned for %s", pod.Name, devs[0], other)
		}
		seen[devs[0]] = pod.Name
	}
	_, st := h.schedule(newPod("ninth").container("c", "nvidia.com/gpu=1").obj())
	if st.IsSuccess() || !strings.Contains(st.Message(), "no node has 1 free healthy GPUs (nvidia.com/gpu) of an allowed product") {
		t.Errorf("ninth pod: %v, want a refusal for lack of a free GPU", st)
	}
	// Unreserve gives a GPU back.
	h.unreserve(newPod("pa").container("c", "nvidia.com/gpu=1", "cpu=1").obj(), "dgx")
	if _, st := h.schedule(newPod("tenth").container("c", "nvidia.com/gpu=1").obj()); !st.IsSuccess() {
		t.Errorf("after Unreserve: %v", st)
	}
}

func TestPlacementAndRefusals(t *testing.T) {
	tests := []struct {
		name     string
		pod      *corev1.Pod
		wantNode string
		wantErr  string
	}{
		{name: "4 nvlinked gpus go to the dgx", pod: newPod("a").container("c", "nvidia.com/gpu=4").annotate(AnnotationInterconnect, "nvlink").obj(), wantNode: "dgx"},
		{name: "mig slice", pod: newPod("a").container("c", "nvidia.com/mig-1g.10gb=1").obj(), wantNode: "dgx"},
		{name: "shares", pod: newPod("a").container("c", "nvidia.com/gpu.shared=2").obj(), wantNode: "ts"},
		{name: "product affinity", pod: newPod("a").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, l40s).obj(), wantNode: "l40s"},
		{name: "4 nvlinked gpus on l40s only", pod: newPod("a").container("c", "nvidia.com/gpu=4").requireProducts(corev1.NodeSelectorOpIn, l40s).annotate(AnnotationInterconnect, "nvlink").obj(),
			wantErr: "no free set of 4 NVLink-connected GPUs"},
		{name: "product that does not exist", pod: newPod("a").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, "NVIDIA-B200").obj(),
			wantErr: "no node has a GPU of product NVIDIA-B200 (nvidia.com/gpu.product); products in the cluster: NVIDIA-A10, NVIDIA-H100-80GB-HBM3, NVIDIA-L40S"},
		{name: "unknown mig profile", pod: newPod("a").container("c", "nvidia.com/mig-7g.80gb=1").obj(),
			wantErr: "no node offers MIG profile 7g.80gb (nvidia.com/mig-7g.80gb); MIG profiles offered: 1g.10gb"},
		{name: "more share units than any gpu has", pod: newPod("a").container("c", "nvidia.com/gpu.shared=6").obj(),
			wantErr: "no GPU has 6 units of nvidia.com/gpu.shared; the largest: 4 on node ts, GPU 0"},
		{name: "more gpus than any node has", pod: newPod("a").container("c", "nvidia.com/gpu=16").obj(),
			wantErr: "no node has 16 healthy GPUs (nvidia.com/gpu); the most: 7 on node dgx"},
		{name: "shares and whole gpus in one container", pod: newPod("a").container("c", "nvidia.com/gpu=1", "nvidia.com/gpu.shared=1").obj(),
			wantErr: "whole GPUs and shares of a GPU cannot be mixed in one container"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, dgxH100("dgx", t0, 7).obj(), l40sServer("l40s", t0).obj(), sharedNode("ts", t0, 2, 4).obj())
			node, st := h.schedule(tt.pod)
			if tt.wantErr != "" {
				if st.IsSuccess() || !strings.Contains(st.Message(), tt.wantErr) {
					t.Fatalf("schedule = %s, %v; want a refusal containing %q", node, st, tt.wantErr)
				}
				return
			}
			if !st.IsSuccess() || node != tt.wantNode {
				t.Fatalf("schedule = %s, %v; want %s", node, st, tt.wantNode)
			}
		})
	}
}

func TestShareRefusalNamesTheLargestFree(t *testing.T) {
	gn := sharedNode("ts", t0, 2, 4).alloc("a", "x", "GPU-ts-0::0", "GPU-ts-0::1", "GPU-ts-0::2").alloc("a", "y", "GPU-ts-1::0").obj()
	h := newHarness(t, gn)
	_, st := h.schedule(newPod("p").container("c", "nvidia.com/gpu.shared=4").obj())
	if want := "no GPU has 4 free units of nvidia.com/gpu.shared; largest free: 3 on node ts, GPU 1"; st.IsSuccess() || !strings.Contains(st.Message(), want) {
		t.Errorf("refusal = %v, want %q", st, want)
	}
}

func TestPreFilterNamesTheNodesThatAdvertise(t *testing.T) {
	nodes := func() []*v1alpha1.GPUNode {
		return []*v1alpha1.GPUNode{dgxH100("dgx", t0, 7).obj(), l40sServer("l40s", t0).obj(), sharedNode("ts", t0, 2, 4).obj(),
			l40sServer("old", t0.Add(-time.Hour)).obj()}
	}
	tests := []struct {
		name string
		pod  *podBuilder
		want []string // nil: every node
	}{
		// The stale node is named: Tessera cannot judge it.
		{name: "a MIG slice", pod: newPod("p").container("c", "nvidia.com/mig-1g.10gb=1"), want: []string{"dgx", "old"}},
		{name: "share units", pod: newPod("p").container("c", "nvidia.com/gpu.shared=2"), want: []string{"old", "ts"}},
		{name: "whole GPUs, on most nodes", pod: newPod("p").container("c", "nvidia.com/gpu=1")},
		{name: "no GPU", pod: newPod("p").container("c", "cpu=1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nodes()...)
			res, st := h.p.PreFilter(h.ctx, framework.NewCycleState(), tt.pod.obj(), h.nodeInfos())
			if !st.IsSuccess() && !st.IsSkip() {
				t.Fatalf("PreFilter: %v", st)
			}
			if tt.want == nil {
				if !res.AllNodes() {
					t.Errorf("PreFilter named %v, want every node", sets.List(res.NodeNames))
				}
				return
			}
			if res.AllNodes() || !slices.Equal(sets.List(res.NodeNames), tt.want) {
				t.Errorf("PreFilter named %v, want %v", res, tt.want)
			}
			if st.IsSkip() {
				t.Errorf("PreFilter skips Filter and names nodes: the framework would drop the names")
			}
		})
	}
	// Until the slices run out: the refusal says why the other nodes were
	// not filtered (the harness checks each was refused rightly).
	h := newHarness(t, nodes()...)
	for i := range 8 {
		pod := newPod(fmt.Sprintf("p%d", i)).container("c", "nvidia.com/mig-1g.10gb=1").obj()
		_, st := h.schedule(pod)
		if i < 7 {
			if !st.IsSuccess() {
				t.Fatalf("pod %d: %v", i, st)
			}
			continue
		}
		for _, want := range []string{"2 node(s) advertise no nvidia.com/mig-1g.10gb", "no free MIG slice 1g.10gb on a healthy GPU of an allowed product"} {
			if st.IsSuccess() || !strings.Contains(st.Message(), want) {
				t.Errorf("eighth pod: %v, want %q", st, want)
			}
		}
	}
}

func TestStaleAndInconsistentNodesAreNeutral(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj(), l40sServer("old", t0.Add(-time.Hour)).obj())
	bad := dgxH100("bad", t0).alloc("a", "b", "GPU-unknown").obj()
	h.upsert(bad)
	ni := framework.NewNodeInfo()
	ni.SetNode(kubeNode(bad, "128", "1Ti"))
	h.nodes["bad"] = ni
	if v, _ := testutil.GetCounterMetricValue(gpuNodesInconsistent.WithLabelValues("bad")); v < 1 {
		t.Errorf("inconsistent counter for bad = %v, want at least 1", v)
	}
	pod := newPod("p").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, l40s).obj()
	state := framework.NewCycleState()
	if _, st := h.p.PreFilter(h.ctx, state, pod, h.nodeInfos()); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v (a stale node's product label keeps the product known)", st)
	}
	for _, n := range []string{"old", "bad"} {
		if st := h.p.Filter(h.ctx, state, pod, h.nodes[n]); !st.IsSuccess() {
			t.Errorf("Filter on %s = %v, want no verdict", n, st)
		}
	}
	if st := h.p.Filter(h.ctx, state, pod, h.nodes["dgx"]); st.IsSuccess() {
		t.Error("Filter on dgx (H100 only) passed an L40S-only pod")
	}
	nodes := []fwk.NodeInfo{h.nodes["old"], h.nodes["bad"]}
	if st := h.p.PreScore(h.ctx, state, pod, nodes); !st.IsSuccess() {
		t.Fatal(st)
	}
	scores := fwk.NodeScoreList{}
	for _, ni := range nodes {
		s, _ := h.p.Score(h.ctx, state, pod, ni)
		scores = append(scores, fwk.NodeScore{Name: ni.Node().Name, Score: s})
	}
	_ = h.p.NormalizeScore(h.ctx, state, pod, scores)
	for _, s := range scores {
		if s.Score != NeutralScore {
			t.Errorf("%s scored %d, want neutral %d", s.Name, s.Score, NeutralScore)
		}
	}
	// Reserve on a stale node plans nothing.
	if st := h.p.Reserve(h.ctx, state, pod, "old"); !st.IsSuccess() || h.devices(pod) != nil {
		t.Errorf("Reserve on a stale node: %v, devices %v", st, h.devices(pod))
	}
	// The heartbeat ages: the fresh node goes stale too.
	h.clock.Step(3 * time.Minute)
	if _, ok := h.p.c.fresh("dgx", h.clock.Now()); ok {
		t.Error("dgx still fresh 3m after its heartbeat (staleAfter 2m)")
	}
}

func TestReconcileWithAgentReports(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj())
	a := newPod("a").container("c", "nvidia.com/gpu=2").obj()
	b := newPod("b").container("c", "nvidia.com/gpu=2").obj()
	for _, p := range []*corev1.Pod{a, b} {
		if _, st := h.schedule(p); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	da, db := h.devices(a), h.devices(b)
	differ := func() float64 {
		v, _ := testutil.GetCounterMetricValue(planMismatches.WithLabelValues("devices_differ"))
		return v
	}
	before := differ()
	// The agent reports a as planned, and nothing of b yet (bound, not admitted).
	h.upsert(dgxH100("dgx", t0).alloc("default", "a", da...).obj())
	if h.devices(a) != nil || !slices.Equal(h.devices(b), db) || differ() != before {
		t.Fatalf("after a's report: a %v b %v mismatches %v→%v", h.devices(a), h.devices(b), before, differ())
	}
	// b's devices stay taken: the next 2-GPU pod gets neither a's nor b's.
	c := newPod("c").container("c", "nvidia.com/gpu=2").obj()
	if _, st := h.schedule(c); !st.IsSuccess() {
		t.Fatal(st)
	}
	for _, d := range h.devices(c) {
		if slices.Contains(da, d) || slices.Contains(db, d) {
			t.Fatalf("c planned %v; a holds %v, b %v", h.devices(c), da, db)
		}
	}
	// The kubelet gave b other devices than planned: a plan mismatch.
	other := []string{}
	for i := range 8 {
		id := "GPU-dgx-" + string(rune('0'+i))
		if !slices.Contains(da, id) && !slices.Contains(db, id) && !slices.Contains(h.devices(c), id) && len(other) < 2 {
			other = append(other, id)
		}
	}
	h.upsert(dgxH100("dgx", t0).alloc("default", "a", da...).alloc("default", "b", other...).obj())
	if differ() != before+1 {
		t.Errorf("plan mismatches %v, want %v", differ(), before+1)
	}
	if h.devices(b) != nil {
		t.Errorf("b still assumed after its report: %v", h.devices(b))
	}
}

func TestSignPod(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj())
	sign := func(p *corev1.Pod) (string, *fwk.Status) {
		fr, st := h.p.SignPod(h.ctx, p)
		if !st.IsSuccess() {
			return "", st
		}
		var b strings.Builder
		for _, f := range fr {
			b.WriteString(f.Key)
		}
		return b.String(), nil
	}
	whole := newPod("a").container("c", "nvidia.com/gpu=1").obj()
	if _, st := sign(whole); st.IsSuccess() {
		t.Error("pod signed before the first placement, which refreshes the learned target")
	}
	// The target refreshes after 1, 2, 4, ... placements: not after the third.
	for _, name := range []string{"w1", "w2"} {
		if _, st := h.schedule(newPod(name).container("c", "nvidia.com/gpu=1").obj()); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	if _, st := sign(whole); !st.IsSuccess() {
		t.Errorf("whole-GPU pod unsignable: %v", st)
	}
	if _, st := sign(newPod("cpu").container("c", "cpu=2").obj()); !st.IsSuccess() {
		t.Errorf("CPU-only pod unsignable: %v", st)
	}
	if _, st := sign(newPod("a").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpNotIn, l40s).obj()); st.IsSuccess() {
		t.Error("NotIn product pod signed; its allowed products depend on the cluster")
	}
	gang := newPod("a").container("c", "nvidia.com/gpu=8").obj()
	gang.Spec.SchedulingGroup = &corev1.PodSchedulingGroup{}
	if _, st := sign(gang); st.IsSuccess() {
		t.Error("gang pod signed")
	}
}

func klogFrom(ctx context.Context) klog.Logger { return klog.FromContext(ctx) }

// listingHandle is a framework handle that lists the profile's binders.
type listingHandle struct {
	fwk.Handle
	binders []string
}

func (h listingHandle) ListPlugins() *schedconfig.Plugins {
	ps := &schedconfig.Plugins{}
	for _, b := range h.binders {
		ps.Bind.Enabled = append(ps.Bind.Enabled, schedconfig.Plugin{Name: b})
	}
	return ps
}

// TestBindsPodsOnlyAsTheFirstBinder: Tessera's Bind carries the plan only
// where it runs before DefaultBinder; else PreBind must write it.
func TestBindsPodsOnlyAsTheFirstBinder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle fwk.Handle
		want   bool
	}{
		{"enabled at bind, before DefaultBinder", listingHandle{binders: []string{Name, "DefaultBinder"}}, true},
		{"multiPoint only, after DefaultBinder", listingHandle{binders: []string{"DefaultBinder", Name}}, false},
		{"no binder listed", listingHandle{}, false},
		{"a handle that lists nothing", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPlugin(DefaultArgs(), tc.handle, clocktesting.NewFakePassiveClock(t0))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.bindsPods(); got != tc.want {
				t.Errorf("bindsPods() = %v, want %v", got, tc.want)
			}
			_, st := p.PreBindPreFlight(context.Background(), nil, &corev1.Pod{}, "n")
			if !st.IsSkip() {
				t.Errorf("PreBindPreFlight of a pod without a plan = %v, want Skip", st)
			}
			if st := p.Bind(context.Background(), nil, &corev1.Pod{}, "n"); !st.IsSkip() {
				t.Errorf("Bind of a pod without a plan = %v, want Skip", st)
			}
		})
	}
}

// TestCountingFiltersWhatItCan: PreFilter skips Tessera's Filter exactly for
// the pods and clusters where counting decides (countable), and the
// harness's schedule checks, node by node, that counting then says what
// Tessera's Filter would have said.
func TestCountingFiltersWhatItCan(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*v1alpha1.GPUNode
		pod   *podBuilder
		want  bool // Filter skipped
	}{
		{name: "one whole GPU", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), l40sServer("l", t0).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=1"), want: true},
		{name: "whole GPUs without an interconnect", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), l40sServer("l", t0).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=4"), want: true},
		{name: "whole GPUs that must be NVLink-connected", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=4").annotate(AnnotationInterconnect, "nvlink"), want: false},
		{name: "a MIG slice", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0, 6, 7).obj()},
			pod: newPod("p").container("c", "nvidia.com/mig-1g.10gb=1"), want: true},
		{name: "one share unit", nodes: []*v1alpha1.GPUNode{sharedNode("ts", t0, 2, 4).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu.shared=1"), want: true},
		{name: "share units that must fit on one GPU", nodes: []*v1alpha1.GPUNode{sharedNode("ts", t0, 2, 4).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu.shared=2"), want: false},
		{name: "an allowed product", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), l40sServer("l", t0).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, "NVIDIA-L40S"), want: false},
		{name: "an unhealthy GPU anywhere", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), l40sServer("l", t0).unhealthy(2, "XID 79").obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=1"), want: false},
		{name: "GPUs advertised whole beside their shares", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), wholeAndShared("ws", t0, 2, 1000).obj()},
			pod: newPod("p").container("c", "nvidia.com/gpu=1"), want: false},
		{name: "whole GPUs where a node shares the resource", nodes: []*v1alpha1.GPUNode{dgxH100("dgx", t0).obj(), func() *v1alpha1.GPUNode {
			gn := sharedNode("ts", t0, 2, 4).obj()
			for i := range gn.Status.GPUs {
				gn.Status.GPUs[i].Sharing.Resource = "nvidia.com/gpu"
			}
			return gn
		}()}, pod: newPod("p").container("c", "nvidia.com/gpu=2"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes...)
			state := framework.NewCycleState()
			_, st := h.p.PreFilter(h.ctx, state, tt.pod.obj(), h.nodeInfos())
			if got := st.IsSkip(); got != tt.want || !got && !st.IsSuccess() {
				t.Fatalf("PreFilter = %v, want Filter skipped: %t", st, tt.want)
			}
			if cd := getCycle(state); cd == nil || cd.countable != tt.want {
				t.Errorf("cycle data %+v, want countable %t", cd, tt.want)
			}
			// Scheduled until the cluster is full: every verdict on the
			// way is checked against counting when Filter is skipped.
			for i := range 40 {
				pod := tt.pod.obj()
				pod.Name, pod.UID = fmt.Sprintf("p%d", i), types.UID(fmt.Sprintf("uid-p%d", i))
				if _, st := h.schedule(pod); !st.IsSuccess() {
					if tt.want && !strings.Contains(st.Message(), "no ") {
						t.Errorf("pod %s refused with %q, want PostFilter's words", pod.Name, st.Message())
					}
					break
				}
			}
		})
	}
}

// TestSurveyOutlivesHeartbeats checks which GPUNode updates void PreFilter's
// surveys: not a heartbeat or an allocation (the agent confirms an unchanged
// status every 30 s), but a health change, a new node, and the return of a
// node every survey so far counted as stale.
func TestSurveyOutlivesHeartbeats(t *testing.T) {
	tests := []struct {
		name   string
		update func(hb time.Time) *v1alpha1.GPUNode
		voids  bool
	}{
		{name: "heartbeat", update: func(hb time.Time) *v1alpha1.GPUNode { return dgxH100("dgx", hb, 7).obj() }},
		{name: "allocation", update: func(hb time.Time) *v1alpha1.GPUNode {
			return dgxH100("dgx", hb, 7).alloc("ml", "a", "GPU-dgx-0").obj()
		}},
		{name: "unhealthy GPU", update: func(hb time.Time) *v1alpha1.GPUNode { return dgxH100("dgx", hb, 7).unhealthy(3, "XID 79").obj() }, voids: true},
		{name: "MIG layout", update: func(hb time.Time) *v1alpha1.GPUNode { return dgxH100("dgx", hb, 6, 7).obj() }, voids: true},
		{name: "new node", update: func(hb time.Time) *v1alpha1.GPUNode { return l40sServer("new", hb).obj() }, voids: true},
		{name: "inconsistent", update: func(hb time.Time) *v1alpha1.GPUNode {
			return dgxH100("dgx", hb, 7).alloc("a", "b", "GPU-unknown").obj()
		}, voids: true},
	}
	pod := newPod("p").container("c", "nvidia.com/mig-1g.10gb=1").obj()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, dgxH100("dgx", t0, 7).obj(), l40sServer("l40s", t0).obj())
			if _, st := h.p.PreFilter(h.ctx, framework.NewCycleState(), pod, h.nodeInfos()); !st.IsSuccess() && !st.IsSkip() {
				t.Fatal(st)
			}
			gen := h.p.c.gen
			h.clock.Step(30 * time.Second)
			h.upsert(tt.update(h.clock.Now()))
			if voided := h.p.c.gen != gen; voided != tt.voids {
				t.Errorf("survey voided: %t, want %t", voided, tt.voids)
			}
		})
	}
	t.Run("a stale node returns", func(t *testing.T) {
		h := newHarness(t, dgxH100("dgx", t0, 7).obj(), l40sServer("l40s", t0.Add(-time.Hour)).obj())
		if _, st := h.p.PreFilter(h.ctx, framework.NewCycleState(), pod, h.nodeInfos()); !st.IsSuccess() && !st.IsSkip() {
			t.Fatal(st)
		}
		gen := h.p.c.gen
		h.upsert(l40sServer("l40s", t0).obj())
		if h.p.c.gen == gen {
			t.Error("a node stale at the survey came back fresh and the survey stands")
		}
	})
}
