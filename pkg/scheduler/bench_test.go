package scheduler

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"
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
	gns, infos := benchFleet(1000)
	nodes := make([]fwk.NodeInfo, len(infos))
	for i, ni := range infos {
		nodes[i] = ni
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

// BenchmarkCycle5000Nodes measures what Tessera adds to kube-scheduler's
// cycle for the whole-GPU control of test/schedperf (make bench-scheduler
// SCHEDPERF_FILTER=whole) without the API server: 5,000 nodes as there,
// pods of 1, 2 and 4 NVLink-connected GPUs (8:1:1), each scored on the
// next 500 nodes of a rotating window (kube-scheduler scores 10 % of 5,000
// nodes, starting where the last pod's search stopped), then Reserve on
// the best and the pod added to its NodeInfo. One op is one pod: PreFilter,
// PreScore, 500 Score look-ups, NormalizeScore, Reserve.
//
// evicted runs the same with the CPU caches emptied between pods (the
// timer stopped), as the API server, the informers and the binding
// goroutines empty them between two pods in scheduler_perf: there the
// plugin's cost per node is mostly cache misses, which the warm variant
// does not show.
func BenchmarkCycle5000Nodes(b *testing.B) {
	for _, evict := range []bool{false, true} {
		name := "warm"
		if evict {
			name = "evicted"
		}
		b.Run(name, func(b *testing.B) { benchCycle(b, 5000, 500, evict) })
	}
}

func benchCycle(b *testing.B, nodeCount, window int, evict bool) {
	clk := clocktesting.NewFakeClock(t0)
	p, err := newPlugin(DefaultArgs(), nil, clk)
	if err != nil {
		b.Fatal(err)
	}
	logger := klog.Background()
	gns, infos := benchFleet(nodeCount)
	nodes := make([]fwk.NodeInfo, len(infos))
	byName := map[string]*framework.NodeInfo{}
	for i, gn := range gns {
		p.c.upsert(logger, gn)
		nodes[i] = infos[i]
		byName[gn.Name] = infos[i]
	}
	// Emptying the caches: writing a buffer larger than the last-level
	// cache of the machines this runs on.
	var thrash []byte
	if evict {
		thrash = make([]byte, 256<<20)
	}
	ctx := b.Context()
	start, scores := 0, make(fwk.NodeScoreList, 0, window)
	pod := func(i int) *corev1.Pod {
		name := fmt.Sprintf("whole-%d", i)
		switch i % 10 {
		case 8:
			return newPod(name).container("c", "nvidia.com/gpu=2", "cpu=16", "memory=128Gi").obj()
		case 9:
			return newPod(name).container("c", "nvidia.com/gpu=4", "cpu=32", "memory=256Gi").annotate(AnnotationInterconnect, "nvlink").obj()
		}
		return newPod(name).container("c", "nvidia.com/gpu=1", "cpu=8", "memory=64Gi").obj()
	}
	i := 0
	for b.Loop() {
		pod := pod(i)
		i++
		state := framework.NewCycleState()
		if _, st := p.PreFilter(ctx, state, pod, nodes); !st.IsSuccess() && !st.IsSkip() {
			b.Fatal(st)
		}
		b.StopTimer()
		for j := 0; j < len(thrash); j += 64 {
			thrash[j]++
		}
		// Filtering is kube-scheduler's (NodeResourcesFit), not timed; it
		// leaves the NodeInfos in the cache, as it does there.
		b.StopTimer()
		var feasible []fwk.NodeInfo
		for k := 0; k < len(nodes) && len(feasible) < window; k++ {
			ni := nodes[(start+k)%len(nodes)]
			if len(noderesources.Fits(pod, ni, nil, noderesources.ResourceRequestsOptions{})) == 0 {
				feasible = append(feasible, ni)
			}
		}
		start = (start + window) % len(nodes)
		b.StartTimer()
		if len(feasible) < 2 {
			b.Fatalf("pod %d: %d feasible nodes", i, len(feasible))
		}
		if st := p.PreScore(ctx, state, pod, feasible); !st.IsSuccess() {
			b.Fatal(st)
		}
		scores = scores[:0]
		for _, ni := range feasible {
			s, st := p.Score(ctx, state, pod, ni)
			if !st.IsSuccess() {
				b.Fatal(st)
			}
			scores = append(scores, fwk.NodeScore{Name: ni.Node().Name, Score: s})
		}
		if st := p.NormalizeScore(ctx, state, pod, scores); !st.IsSuccess() {
			b.Fatal(st)
		}
		best := scores[0]
		for _, s := range scores[1:] {
			if s.Score > best.Score {
				best = s
			}
		}
		if st := p.Reserve(ctx, state, pod, best.Name); !st.IsSuccess() {
			b.Fatal(st)
		}
		byName[best.Name].AddPod(pod)
	}
}

// benchFleet is the benchmarks' cluster, as in test/schedperf: of every 10
// nodes, 8 DGX H100, 1 DGX H100 with GPUs 6–7 in MIG mode, 1 server of 4
// A10s time-shared as 8 units each; GPUNodes and their NodeInfos.
func benchFleet(n int) ([]*v1alpha1.GPUNode, []*framework.NodeInfo) {
	gns := make([]*v1alpha1.GPUNode, 0, n)
	infos := make([]*framework.NodeInfo, 0, n)
	for i := range n {
		name := fmt.Sprintf("node-%05d", i)
		var gn *v1alpha1.GPUNode
		switch i % 10 {
		case 8:
			gn = dgxH100(name, t0, 6, 7).obj()
		case 9:
			gn = sharedNode(name, t0, 4, 8).obj()
		default:
			gn = dgxH100(name, t0).obj()
		}
		ni := framework.NewNodeInfo()
		ni.SetNode(kubeNode(gn, "224", "2Ti"))
		gns, infos = append(gns, gn), append(infos, ni)
	}
	return gns, infos
}
