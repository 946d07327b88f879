package scheduler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// BenchmarkScore1000Nodes measures Tessera's scoring of one pod over a
// 1,000-node cluster (800 DGX H100, 100 DGX H100 with two MIG GPUs, 100
// servers of 4 time-shared A10s, as in test/schedperf), i.e. what the
// plugin adds to one scheduling cycle after filtering: PreScore (every
// node scored under one lock) and the 1,000 Score look-ups.
//
// cold: the node caches were just rebuilt (a GPUNode change, or the first
// pod of its shape), so nothing is memoized; warm: the same pod shape was
// scored before on unchanged nodes (pods arriving back to back on nodes
// that did not change).
func BenchmarkScore1000Nodes(b *testing.B) {
	clk := clocktesting.NewFakeClock(t0)
	p, err := newPlugin(DefaultArgs(), nil, clk)
	if err != nil {
		b.Fatal(err)
	}
	var gns []*v1alpha1.GPUNode
	var nodes []fwk.NodeInfo
	for i := range 1000 {
		name := fmt.Sprintf("node-%04d", i)
		var gn *v1alpha1.GPUNode
		switch i % 10 {
		case 8:
			gn = dgxH100(name, t0, 6, 7).obj()
		case 9:
			gn = sharedNode(name, t0, 4, 8).obj()
		default:
			gn = dgxH100(name, t0).obj()
		}
		gns = append(gns, gn)
		ni := framework.NewNodeInfo()
		ni.SetNode(kubeNode(gn, "224", "2Ti"))
		nodes = append(nodes, ni)
	}
	logger := klog.Background()
	rebuild := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, gn := range gns {
			p.c.upsert(logger, gn)
		}
	}
	rebuild()
	ctx := b.Context()
	pods := []struct {
		name string
		pod  *corev1.Pod
	}{
		{"1gpu", newPod("p").container("c", "nvidia.com/gpu=1", "cpu=8").obj()},
		{"4gpu-nvlink", newPod("p").container("c", "nvidia.com/gpu=4", "cpu=32").annotate(AnnotationInterconnect, "nvlink").obj()},
		{"8gpu", newPod("p").container("c", "nvidia.com/gpu=8", "cpu=64").obj()},
		{"mig-1g.10gb", newPod("p").container("c", "nvidia.com/mig-1g.10gb=1", "cpu=2").obj()},
		{"share-2", newPod("p").container("c", "nvidia.com/gpu.shared=2", "cpu=1").obj()},
	}
	score := func(b *testing.B, pod *corev1.Pod) {
		state := framework.NewCycleState()
		// Skip: counting filters the pod (Filter is not run).
		if _, st := p.PreFilter(ctx, state, pod, nodes); !st.IsSuccess() && !st.IsSkip() {
			b.Fatal(st)
		}
		if st := p.PreScore(ctx, state, pod, nodes); !st.IsSuccess() {
			b.Fatal(st)
		}
		judged := 0
		for _, ni := range nodes {
			s, st := p.Score(ctx, state, pod, ni)
			if !st.IsSuccess() {
				b.Fatal(st)
			}
			if s >= 0 {
				judged++
			}
		}
		if judged == 0 {
			b.Fatal("no node judged")
		}
	}
	for _, tc := range pods {
		b.Run(tc.name+"/cold", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				rebuild()
				b.StartTimer()
				score(b, tc.pod)
			}
		})
		b.Run(tc.name+"/warm", func(b *testing.B) {
			score(b, tc.pod)
			for b.Loop() {
				score(b, tc.pod)
			}
		})
	}
}
