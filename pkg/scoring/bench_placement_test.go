package scoring_test

import (
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

// BenchmarkScore scores pods on a DGX H100 (four whole GPUs, two partly used,
// four MIG GPUs): "cached" is a Score call on a node whose state did not
// change since the last call for the same request shape, "assume+score"
// changes the node before every call (Assume or Forget, then Score), so the
// score is recomputed from the incrementally kept state.
func BenchmarkScore(b *testing.B) {
	layout := map[int][]string{4: {"1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"}, 5: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, 6: {"3g.40gb", "3g.40gb"}, 7: {"2g.20gb", "2g.20gb", "2g.20gb"}}
	for _, tc := range []struct {
		name string
		d    scoring.Demand
	}{
		{"2gpu", scoring.Demand{GPUs: 2, CPU: 24000, Memory: 256 << 10}},
		{"1gpu", scoring.Demand{GPUs: 1, CPU: 8000, Memory: 64 << 10}},
		{"mig-1g", scoring.Demand{MIGProfile: "1g.10gb", CPU: 2000, Memory: 16 << 10}},
	} {
		for _, mode := range []string{"cached", "assume+score"} {
			b.Run(tc.name+"/"+mode, func(b *testing.B) {
				s := newScorer(b, nil)
				benchTarget(b, s)
				n := newNode(b, s, use(nodeState(b, "dgx", "dgx-h100", layout), 1))
				r := compile(b, s, tc.d)
				other := compile(b, s, scoring.Demand{CPU: 1000})
				if res := s.Score(n, r); res.Err != nil {
					b.Fatal(res.Err)
				}
				var none scoring.Assignment
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if mode != "cached" {
						var err error
						if i%2 == 0 {
							err = n.Assume(other, none)
						} else {
							err = n.Forget(other, none)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					if res := s.Score(n, r); res.Err != nil {
						b.Fatal(res.Err)
					}
				}
			})
		}
	}
}
