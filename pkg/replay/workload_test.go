package replay

import (
	"math"
	"slices"
	"testing"
)

func TestNewTargetWorkload(t *testing.T) {
	c := newCluster(t, "n1,64000,262144,8,G2", "n2,64000,262144,8,T4")
	var rows []string
	rows = append(rows, podRows("a", 8, 8000, 1, 1, 500, "")...)    // 8 shared
	rows = append(rows, podRows("b", 6, 4000, 1, 0, 0, "")...)      // 6 CPU-only
	rows = append(rows, podRows("c", 3, 4000, 1, 1, 1000, "")...)   // 3 whole, cpu 4000
	rows = append(rows, podRows("d", 3, 8000, 1, 1, 1000, "T4")...) // 3 whole, cpu 8000, T4 only
	tr := newTrace(t, c, rows...)

	type shape struct {
		cpu, g int64
		k      int
		spec   string
		count  int
	}
	tests := []struct {
		name       string
		popularity int
		want       []shape
		wantP      []float64
	}{
		{
			// 95 % of 20 = 19: all four shapes are needed; then p is
			// count/total with no renormalisation. Ties on count go to the
			// larger cpu first (d before c).
			name:       "all shapes",
			popularity: 95,
			want: []shape{
				{8000, 500, 1, "", 8}, {4000, 0, 0, "", 6}, {8000, 1000, 1, "T4", 3}, {4000, 1000, 1, "", 3},
			},
			wantP: []float64{8.0 / 20, 6.0 / 20, 3.0 / 20, 3.0 / 20},
		},
		{
			// 70 % of 20 = 14: the prefix 8+6 reaches it exactly.
			name:       "prefix renormalised",
			popularity: 70,
			want:       []shape{{8000, 500, 1, "", 8}, {4000, 0, 0, "", 6}},
			wantP:      []float64{8.0 / 14, 6.0 / 14},
		},
		{
			name:       "prefix crossing the threshold",
			popularity: 71,
			want:       []shape{{8000, 500, 1, "", 8}, {4000, 0, 0, "", 6}, {8000, 1000, 1, "T4", 3}},
			wantP:      []float64{8.0 / 17, 6.0 / 17, 3.0 / 17},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tw := NewTargetWorkload(tr.Pods, tt.popularity)
			var got []shape
			var gotP []float64
			for _, s := range tw.Shapes {
				got = append(got, shape{s.CPU, s.G, s.K, s.Spec, s.Count})
				gotP = append(gotP, s.P)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("shapes = %v, want %v", got, tt.want)
			}
			for i := range tt.wantP {
				if i >= len(gotP) || math.Abs(gotP[i]-tt.wantP[i]) > 1e-12 {
					t.Errorf("p = %v, want %v", gotP, tt.wantP)
					break
				}
			}
			if tw.Total != 20 {
				t.Errorf("total = %d", tw.Total)
			}
		})
	}
	// The T4-only shape keeps its spec filter.
	tw := NewTargetWorkload(tr.Pods, 95)
	if tw.Shapes[2].AllowsModel(0) || !tw.Shapes[2].AllowsModel(1) {
		t.Errorf("T4 shape allows G2=%v T4=%v", tw.Shapes[2].AllowsModel(0), tw.Shapes[2].AllowsModel(1))
	}
}
