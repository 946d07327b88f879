package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// withPriority sets the pod's priority and whether it may preempt.
func (b *podBuilder) withPriority(prio int32, never bool) *podBuilder {
	b.p.Spec.Priority = &prio
	if never {
		p := corev1.PreemptNever
		b.p.Spec.PreemptionPolicy = &p
	}
	return b
}

// TestPreFilterNamesTheNodesWithRoom checks which nodes PreFilter names for a
// whole-GPU pod on a cluster where most nodes are full: those with room,
// and those where the pod could preempt a pod holding GPUs; none when they
// are too many to be worth naming, when no node has room or for a gang.
// The harness checks every node left out against counting and preemption.
func TestPreFilterNamesTheNodesWithRoom(t *testing.T) {
	nodes := func() []*v1alpha1.GPUNode {
		var out []*v1alpha1.GPUNode
		for i := range 6 {
			out = append(out, dgxH100(fmt.Sprintf("dgx-%d", i), t0).obj())
		}
		return out
	}
	tests := []struct {
		name string
		// fill is how many nodes 8-GPU pods fill, fillPrio their
		// priority (the first filler's: lowPrio0 makes it -10).
		fill     int
		lowPrio0 bool
		pod      *podBuilder
		want     int // nodes named; 0: every node
	}{
		{name: "two of six nodes have room", fill: 4, pod: newPod("p").container("c", "nvidia.com/gpu=1"), want: 2},
		{name: "four GPUs", fill: 4, pod: newPod("p").container("c", "nvidia.com/gpu=4"), want: 2},
		{name: "a lower-priority pod holds a full node's GPUs", fill: 4, lowPrio0: true, pod: newPod("p").container("c", "nvidia.com/gpu=1"), want: 3},
		{name: "a higher priority that never preempts", fill: 4, pod: newPod("p").container("c", "nvidia.com/gpu=1").withPriority(100, true), want: 2},
		{name: "a higher priority that may preempt any of them", fill: 4, pod: newPod("p").container("c", "nvidia.com/gpu=1").withPriority(100, false)},
		{name: "four of six nodes have room", fill: 2, pod: newPod("p").container("c", "nvidia.com/gpu=1")},
		{name: "no node has room", fill: 6, pod: newPod("p").container("c", "nvidia.com/gpu=1")},
		{name: "a gang member", fill: 4, pod: func() *podBuilder {
			b := newPod("p").container("c", "nvidia.com/gpu=1")
			b.p.Spec.SchedulingGroup = &corev1.PodSchedulingGroup{PodGroupName: new("g")}
			return b
		}()},
		{name: "no GPU", fill: 4, pod: newPod("p").container("c", "cpu=1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nodes()...)
			for i := range tt.fill {
				b := newPod(fmt.Sprintf("fill-%d", i)).container("c", "nvidia.com/gpu=8")
				if i == 0 && tt.lowPrio0 {
					b.withPriority(-10, false)
				}
				if _, st := h.schedule(b.obj()); !st.IsSuccess() {
					t.Fatalf("filler %d: %v", i, st)
				}
			}
			state := framework.NewCycleState()
			res, st := h.p.PreFilter(h.ctx, state, tt.pod.obj(), h.nodeInfos())
			if !st.IsSuccess() && !st.IsSkip() {
				t.Fatalf("PreFilter: %v", st)
			}
			if tt.want == 0 {
				if !res.AllNodes() {
					t.Errorf("PreFilter named %v, want every node", sets.List(res.NodeNames))
				}
			} else {
				if res.AllNodes() || res.NodeNames.Len() != tt.want {
					t.Errorf("PreFilter named %v, want %d nodes", res, tt.want)
				}
				if st.IsSkip() {
					t.Errorf("PreFilter skips Filter and names nodes: the framework would drop the names")
				}
				if cd := getCycle(state); cd.roomless != 6-tt.want {
					t.Errorf("nodes left out for room: %d, want %d", cd.roomless, 6-tt.want)
				}
			}
			// The pod itself, through the harness's checks.
			if tt.fill < 6 && tt.pod.p.Spec.SchedulingGroup == nil {
				if _, st := h.schedule(tt.pod.obj()); !st.IsSuccess() {
					t.Errorf("pod: %v", st)
				}
			}
		})
	}

	// A pod the named nodes cannot host (Filter refuses the L40S server: no
	// NVLink) hears why the others were left out.
	gns := nodes()[:5]
	h := newHarness(t, append(gns, l40sServer("l40s", t0).obj())...)
	for i := range 5 {
		if _, st := h.schedule(newPod(fmt.Sprintf("fill-%d", i)).container("c", "nvidia.com/gpu=8").obj()); !st.IsSuccess() {
			t.Fatalf("filler %d: %v", i, st)
		}
	}
	_, st := h.schedule(newPod("nvlink").container("c", "nvidia.com/gpu=2").annotate(AnnotationInterconnect, string(InterconnectNVLink)).obj())
	if st.IsSuccess() || !strings.Contains(st.Message(), "5 node(s) have less than 2 nvidia.com/gpu free") {
		t.Errorf("NVLink pod on a full cluster: %v, want the nodes left out named", st)
	}
}

// TestRoomsFollowTheNodeInfos drives the rooms through random placements and
// removals of pods of random needs and priorities, nodes coming and going,
// and checks every answer against the set computed afresh from the
// NodeInfos: the nodes with room or a pod the probe could preempt, when
// they are at most the limit, else none. One pod is placed per call, as in
// kube-scheduler (the walk is skipped only while the rooms cannot shrink
// to the limit).
func TestRoomsFollowTheNodeInfos(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	const res = corev1.ResourceName("nvidia.com/gpu")
	rng := rand.New(rand.NewPCG(7, 11))
	newNode := func(i int) *framework.NodeInfo {
		ni := framework.NewNodeInfo()
		ni.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%03d", i)}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			res: resource.MustParse("8"), corev1.ResourceCPU: resource.MustParse("128"), corev1.ResourcePods: resource.MustParse("110"),
		}}})
		return ni
	}
	var nodes []*framework.NodeInfo
	for i := range 150 {
		nodes = append(nodes, newNode(i))
	}
	list := func() []fwk.NodeInfo {
		out := make([]fwk.NodeInfo, len(nodes))
		for i, ni := range nodes {
			out[i] = ni
		}
		return out
	}
	free := func(ni *framework.NodeInfo) int64 {
		return ni.Allocatable.ScalarResources[res] - ni.Requested.ScalarResources[res]
	}
	prios := []int32{-5, 0, 0, 0, 7}
	pod := func(name string, need int64) *corev1.Pod {
		b := newPod(name).container("c", fmt.Sprintf("%s=%d", res, need))
		b.withPriority(prios[rng.IntN(len(prios))], rng.IntN(4) == 0)
		return b.obj()
	}
	var r rooms
	named, checked := 0, 0
	for step := range 6000 {
		switch x := rng.IntN(100); {
		case x < 2:
			nodes = append(nodes, newNode(1000+step))
		case x < 3 && len(nodes) > 100:
			i := rng.IntN(len(nodes))
			nodes = slices.Delete(nodes, i, i+1)
		case x < 25:
			ni := nodes[rng.IntN(len(nodes))]
			if pods := ni.Pods; len(pods) > 0 {
				if err := ni.RemovePod(logger, pods[rng.IntN(len(pods))].GetPod()); err != nil {
					t.Fatal(err)
				}
			}
		default:
			need := int64(1 + rng.IntN(8))
			var fits []*framework.NodeInfo
			for _, ni := range nodes {
				if free(ni) >= need {
					fits = append(fits, ni)
				}
			}
			if len(fits) > 0 {
				p := pod(fmt.Sprintf("p%d", step), need)
				p.UID = types.UID(p.Name)
				fits[rng.IntN(len(fits))].AddPod(p)
			}
		}
		probeNeed := int64(1 + rng.IntN(8))
		probe := pod("probe", probeNeed)
		got, left := r.named(probe, res, probeNeed, list())
		want := sets.New[string]()
		for _, ni := range nodes {
			if free(ni) >= probeNeed || preemptionCouldMakeRoom(probe, &cycleData{cycleCore: &cycleCore{d: PodDemand{Resource: res}}}, ni) {
				want.Insert(ni.Node().Name)
			}
		}
		if want.Len() == 0 || want.Len() > roomLimit(len(nodes)) {
			if got != nil {
				t.Fatalf("step %d: named %d nodes, want none (%d with room of %d, limit %d)", step, got.Len(), want.Len(), len(nodes), roomLimit(len(nodes)))
			}
			continue
		}
		checked++
		if got == nil {
			t.Fatalf("step %d: named no nodes, want %d of %d", step, want.Len(), len(nodes))
		}
		if !got.Equal(want) || left != len(nodes)-want.Len() {
			t.Fatalf("step %d: named %v (%d left out), want %v", step, sets.List(got), left, sets.List(want))
		}
		named++
	}
	if named < 500 {
		t.Errorf("only %d of 6000 steps named nodes: the test does not exercise the sets", named)
	}
	t.Logf("%d steps named nodes", named)
}

func TestRoomLimit(t *testing.T) {
	tests := []struct{ nodes, want int }{
		{nodes: 1, want: 0},
		{nodes: 10, want: 5},
		{nodes: 99, want: 49},
		// kube-scheduler looks for 420 of 1,000 nodes; 500 of them: 230.
		{nodes: 1000, want: 500},
		// It looks for 500 of 5,000; 1,250 nodes: 500; 1,252: 500 (40 %
		// of 1,252 rounds down); 1,253: 501.
		{nodes: 5000, want: 1252},
	}
	for _, tt := range tests {
		if got := roomLimit(tt.nodes); got != tt.want {
			t.Errorf("roomLimit(%d) = %d, want %d", tt.nodes, got, tt.want)
		}
	}
}
