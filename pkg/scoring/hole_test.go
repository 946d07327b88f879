package scoring

import (
	"fmt"
	"math"
	"testing"
)

// TestHoleTableCompetition checks the hole residue's model of competition
// between holes: a partly used GPU gets a pod of a shape that fits it only
// as far as the pods of that shape still to come (the product's free
// capacity over the target's GPUs per pod, times the shape's probability)
// outnumber the tighter holes that take them first, shared among the holes
// of its own size.
func TestHoleTableCompetition(t *testing.T) {
	// The target: 810-unit pods (p 0.9) and 160-unit pods (p 0.1) of
	// 1000-unit GPUs, any product: 0.9·0.81 + 0.1·0.16 GPUs per pod.
	const perPod = 0.9*0.81 + 0.1*0.16
	type group struct {
		product string
		nodes   int
		gpus    int
		used    []int // units in use per GPU, the rest idle
	}
	tests := []struct {
		name   string
		groups []group
		// want are E(h)·1000 for h = 190, 210, 30 on product "A"'s GPUs.
		want [3]float64
	}{
		{
			// One 190-unit hole beside an idle 8-GPU node: the 160-unit pods
			// to come (0.1 × 9.19 / perPod = 1.23) outnumber it, so it is
			// filled and leaves 30. A 210-unit hole would get what the
			// 190-unit one leaves of them (0.23).
			name:   "pods to come outnumber the holes",
			groups: []group{{"A", 1, 2, []int{810}}, {"A", 1, 8, nil}},
			want:   [3]float64{30, 210 - 160*(0.1*9.19/perPod-1), 30},
		},
		{
			// 100 holes of 190 units and no idle GPU: 0.1 × 19 / perPod =
			// 2.55 pods of 160 units are to come, so a hole gets one with
			// chance 2.55 %; none reaches a 210-unit hole.
			name:   "holes outnumber the pods to come",
			groups: []group{{"A", 100, 1, []int{810}}},
			want:   [3]float64{190 - 160*(0.1*19/perPod)/100, 210, 30},
		},
		{
			// Ten holes on product A beside an idle 8-GPU node of product
			// B: A's holes get A's part of the pods to come (its share of
			// the free capacity, 1.9 of 9.9 GPUs), as if B were not there.
			name:   "a product's holes get its part of the pods",
			groups: []group{{"A", 10, 1, []int{810}}, {"B", 1, 8, nil}},
			want:   [3]float64{190 - 160*(0.1*1.9/perPod)/10, 210, 30},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewScorer(DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			var reqs []*Request
			for _, u := range []int{810, 160} {
				r, err := s.Compile(Demand{CPU: 1000, ShareUnits: u, UnitsPerGPU: 1000})
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, r)
			}
			if err := s.SetTarget(reqs, []float64{0.9, 0.1}); err != nil {
				t.Fatal(err)
			}
			var hole *GPU
			var product int
			for gi, g := range tc.groups {
				for i := range g.nodes {
					spec := NodeSpec{Name: fmt.Sprintf("%s-%d-%d", g.product, gi, i), CPU: 64000, Memory: 1 << 20}
					var shares []ShareAllocation
					for j := range g.gpus {
						spec.GPUs = append(spec.GPUs, GPUSpec{Product: g.product, NUMANode: -1, Healthy: true, ShareUnits: 1000, ShareWhole: true})
						if j < len(g.used) {
							shares = append(shares, ShareAllocation{GPU: j, Units: g.used[j]})
						}
					}
					if len(shares) > 0 {
						spec.Allocations = []Allocation{{Shares: shares}}
					}
					st, err := NewNodeState(spec)
					if err != nil {
						t.Fatal(err)
					}
					n, err := s.NewNode(st)
					if err != nil {
						t.Fatal(err)
					}
					if g.product == "A" && len(g.used) > 0 {
						hole, product = &n.st.GPUs[0], n.prod[0]
					}
				}
			}
			tab := s.holeTable(product, hole)
			for i, h := range []int{190, 210, 30} {
				if got := tab.at(h) * 1000; math.Abs(got-tc.want[i]) > 1e-6 {
					t.Errorf("E(%d) = %.6f units, want %.6f", h, got, tc.want[i])
				}
			}
		})
	}
}
