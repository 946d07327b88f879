package scoring_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// benchTarget is a mixed target workload for the benchmarks.
func benchTarget(b *testing.B, s *scoring.Scorer) []*scoring.Request {
	b.Helper()
	h100 := []string{"NVIDIA-H100-80GB-HBM3"}
	ds := []scoring.Demand{
		{GPUs: 8, CPU: 96000, Memory: 1 << 20, Allowed: h100},
		{GPUs: 4, CPU: 48000, Memory: 512 << 10, Allowed: h100},
		{GPUs: 2, CPU: 24000, Memory: 256 << 10},
		{GPUs: 1, CPU: 8000, Memory: 64 << 10},
		{MIGProfile: "1g.10gb", CPU: 2000, Memory: 16 << 10},
		{MIGProfile: "2g.20gb", CPU: 4000, Memory: 32 << 10},
		{MIGProfile: "3g.40gb", CPU: 8000, Memory: 64 << 10},
		{ShareUnits: 1, CPU: 1000, Memory: 8 << 10},
	}
	var reqs []*scoring.Request
	var ws []float64
	for i, d := range ds {
		reqs = append(reqs, compile(b, s, d))
		ws = append(ws, float64(len(ds)-i))
	}
	if err := s.SetTarget(reqs, ws); err != nil {
		b.Fatal(err)
	}
	return reqs
}

// traceTarget is a target workload like the openb traces': 36 shapes,
// shares of one GPU of 1000 units (which may go whole), 1 to 8 whole GPUs,
// CPU-only pods.
func traceTarget(b *testing.B, s *scoring.Scorer) {
	b.Helper()
	var reqs []*scoring.Request
	var ws []float64
	for i, units := range []int{810, 650, 470, 460, 320, 230, 160, 110, 50, 250, 500, 750} {
		for j, cpu := range []int64{2000, 4000, 8000} {
			d := scoring.Demand{ShareUnits: units, UnitsPerGPU: 1000, CPU: cpu}
			if i >= 9 {
				d = scoring.Demand{GPUs: []int{1, 2, 4, 8, 1, 2}[j+3*(i-9)%6], CPU: cpu * 4}
			}
			if i == 11 {
				d = scoring.Demand{CPU: cpu * 2}
			}
			reqs = append(reqs, compile(b, s, d))
			ws = append(ws, float64(40-i-j))
		}
	}
	if err := s.SetTarget(reqs, ws); err != nil {
		b.Fatal(err)
	}
}

// traceNode is a node of the traces as the replay describes it: 8 GPUs of
// 1000 units that may go whole, four partly used, one held whole.
func traceNode(b *testing.B) scoring.NodeState {
	b.Helper()
	spec := scoring.NodeSpec{Name: "trace", CPU: 96_000, Memory: 512 << 10}
	for range 8 {
		spec.GPUs = append(spec.GPUs, scoring.GPUSpec{Product: "V100M32", NUMANode: -1, Healthy: true, ShareUnits: 1000, ShareWhole: true})
	}
	spec.Allocations = []scoring.Allocation{{CPU: 40_000, Memory: 128 << 10, GPUs: []int{4},
		Shares: []scoring.ShareAllocation{{GPU: 2, Units: 470}, {GPU: 3, Units: 650}, {GPU: 6, Units: 190}, {GPU: 7, Units: 230}}}}
	st, err := scoring.NewNodeState(spec)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkScore scores pods on a DGX H100: "mixed" has four whole GPUs (one
// used) and four MIG GPUs, "idle" eight free whole GPUs; and on a node of
// the traces ("trace", traceNode, against traceTarget). Modes:
//   - cached: the node did not change since the last call for this request
//     shape (the common case: a scheduling cycle scores every node, and
//     only the node that got the last pod changed);
//   - changed: a CPU-only pod is assumed or forgotten before every call, so
//     the score is recomputed from the incrementally kept state (the
//     whole-GPU choice, cached by free GPU set, survives);
//   - cold: every cache of the node is dropped before every call (device-set
//     search with look-ahead, keep and fragmentation from scratch).
//
// BenchmarkAllocateBaseline is topology.Allocate alone on the same idle
// node, the baseline to read the ratios against.
func BenchmarkScore(b *testing.B) {
	layout := map[int][]string{4: {"1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"}, 5: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, 6: {"3g.40gb", "3g.40gb"}, 7: {"2g.20gb", "2g.20gb", "2g.20gb"}}
	for _, tc := range []struct {
		name string
		node func(b *testing.B) scoring.NodeState
		d    scoring.Demand
	}{
		{"trace/share-320", traceNode, scoring.Demand{ShareUnits: 320, UnitsPerGPU: 1000, CPU: 4000}},
		{"trace/1gpu", traceNode, scoring.Demand{GPUs: 1, CPU: 8000}},
		{"trace/2gpu", traceNode, scoring.Demand{GPUs: 2, CPU: 16000}},
		{"mixed/2gpu", func(b *testing.B) scoring.NodeState { return use(nodeState(b, "dgx", "dgx-h100", layout), 1) }, scoring.Demand{GPUs: 2, CPU: 24000, Memory: 256 << 10}},
		{"mixed/1gpu", func(b *testing.B) scoring.NodeState { return use(nodeState(b, "dgx", "dgx-h100", layout), 1) }, scoring.Demand{GPUs: 1, CPU: 8000, Memory: 64 << 10}},
		{"mixed/mig-1g", func(b *testing.B) scoring.NodeState { return use(nodeState(b, "dgx", "dgx-h100", layout), 1) }, scoring.Demand{MIGProfile: "1g.10gb", CPU: 2000, Memory: 16 << 10}},
		{"idle/4gpu", func(b *testing.B) scoring.NodeState { return nodeState(b, "dgx", "dgx-h100", nil) }, scoring.Demand{GPUs: 4, CPU: 48000, Memory: 512 << 10}},
		{"idle/8gpu", func(b *testing.B) scoring.NodeState { return nodeState(b, "dgx", "dgx-h100", nil) }, scoring.Demand{GPUs: 8, CPU: 96000, Memory: 1 << 20}},
	} {
		for _, mode := range []string{"cached", "changed", "cold"} {
			b.Run(tc.name+"/"+mode, func(b *testing.B) {
				s := newScorer(b, nil)
				if strings.HasPrefix(tc.name, "trace/") {
					traceTarget(b, s)
				} else {
					benchTarget(b, s)
				}
				n := newNode(b, s, tc.node(b))
				r := compile(b, s, tc.d)
				other := compile(b, s, scoring.Demand{CPU: 1000})
				if res := s.Score(n, r); res.Err != nil {
					b.Fatal(res.Err)
				}
				var none scoring.Assignment
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					switch mode {
					case "changed":
						var err error
						if i%2 == 0 {
							err = n.Assume(other, none)
						} else {
							err = n.Forget(other, none)
						}
						if err != nil {
							b.Fatal(err)
						}
					case "cold":
						scoring.DropCaches(n)
					}
					if res := s.Score(n, r); res.Err != nil {
						b.Fatal(res.Err)
					}
				}
			})
		}
	}
}

func BenchmarkAllocateBaseline(b *testing.B) {
	s := newScorer(b, nil)
	n := newNode(b, s, nodeState(b, "dgx", "dgx-h100", nil))
	free := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, k := range []int{4, 8} {
		b.Run(fmt.Sprintf("idle/%dgpu", k), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := n.Allocator().Allocate(free, nil, k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewNode is what a node costs when the scorer first sees it
// (validating and copying its state, building its allocator's tables): paid
// once per node, not per Score.
func BenchmarkNewNode(b *testing.B) {
	layout := map[int][]string{4: {"1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"}, 5: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, 6: {"3g.40gb", "3g.40gb"}, 7: {"2g.20gb", "2g.20gb", "2g.20gb"}}
	for _, tc := range []struct {
		name string
		st   scoring.NodeState
	}{
		{"mixed", use(nodeState(b, "dgx", "dgx-h100", layout), 1)},
		{"idle", nodeState(b, "dgx", "dgx-h100", nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := newScorer(b, nil)
			for i := 0; i < b.N; i++ {
				n := newNode(b, s, tc.st)
				s.RemoveNode(n)
			}
		})
	}
}
