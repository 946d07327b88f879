package topology_test

import (
	"slices"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

func TestSliceGeometry(t *testing.T) {
	tests := []struct {
		name   string
		slices []topology.Slice
		// want: profile -> (compute slices, placements' starts)
		want map[string][2]any
	}{
		{name: "seven 1g.10gb slices of an H100", slices: ones(7),
			want: map[string][2]any{"1g.10gb": {1, []int{0, 1, 2, 3, 4, 5, 6}}, "7g.full": {7, []int{0}}}},
		{name: "two 3g.40gb and a 1g.10gb", slices: []topology.Slice{
			{Profile: "3g.40gb", Placement: gpu.Placement{Start: 0, Size: 4}},
			{Profile: "3g.40gb", Placement: gpu.Placement{Start: 4, Size: 4}},
		}, want: map[string][2]any{"3g.40gb": {3, []int{0, 4}}, "7g.full": {7, []int{0}}}},
		{name: "an A30's four 1g.6gb slices", slices: ones(4),
			want: map[string][2]any{"1g.10gb": {1, []int{0, 1, 2, 3}}, "4g.full": {4, []int{0}}}},
		{name: "a compute instance profile", slices: []topology.Slice{{Profile: "1c.3g.40gb", Placement: gpu.Placement{Start: 4, Size: 4}}},
			want: map[string][2]any{"1c.3g.40gb": {3, []int{4}}, "7g.full": {7, []int{0}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := topology.SliceGeometry(tt.slices)
			if len(got) != len(tt.want) {
				t.Fatalf("%d profiles %+v, want %d", len(got), got, len(tt.want))
			}
			for _, p := range got {
				w, ok := tt.want[p.Name]
				if !ok {
					t.Fatalf("unexpected profile %s", p.Name)
				}
				var starts []int
				for _, pl := range p.Placements {
					starts = append(starts, pl.Start)
				}
				if p.SliceCount != w[0].(int) || p.MaxInstances != len(w[1].([]int)) || !slices.Equal(starts, w[1].([]int)) {
					t.Errorf("%s: %d compute slices, %d instances at %v; want %d at %v", p.Name, p.SliceCount, p.MaxInstances, starts, w[0], w[1])
				}
			}
		})
	}
}

func ones(n int) []topology.Slice {
	var out []topology.Slice
	for i := n - 1; i >= 0; i-- { // out of order: the geometry sorts placements
		out = append(out, topology.Slice{Profile: "1g.10gb", Placement: gpu.Placement{Start: i, Size: 1}})
	}
	return out
}
