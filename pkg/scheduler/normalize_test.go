package scheduler

import (
	"math"
	"slices"
	"testing"

	fwk "k8s.io/kube-scheduler/framework"
)

func TestNormalize(t *testing.T) {
	type ns = fwk.NodeScore
	tests := []struct {
		name string
		in   []ns
		want []int64
	}{
		{name: "keys spanning 63 bits do not overflow",
			in:   []ns{{Name: "a", Score: 0}, {Name: "b", Score: math.MaxInt64}, {Name: "c", Score: math.MaxInt64 / 2}},
			want: []int64{6, 100, 49}},
		{name: "the best is alone at the top; equal keys go by node name",
			in:   []ns{{Name: "n2", Score: 500}, {Name: "n1", Score: 500}, {Name: "n3", Score: 0}},
			want: []int64{99, 100, 6}},
		{name: "the first ranks are strictly ordered, the rest below them",
			in: []ns{{Name: "a", Score: 1000}, {Name: "b", Score: 1000}, {Name: "c", Score: 1000}, {Name: "d", Score: 1000}, {Name: "e", Score: 1000},
				{Name: "f", Score: 1000}, {Name: "g", Score: 1000}, {Name: "h", Score: 1000}, {Name: "i", Score: 1000}, {Name: "j", Score: 1000}},
			want: []int64{100, 99, 98, 97, 96, 95, 94, 93, 92, 92}},
		{name: "linear spacing kept below the ranked nodes",
			in:   []ns{{Name: "a", Score: 100}, {Name: "b", Score: 50}, {Name: "c", Score: 10}},
			want: []int64{100, 44, 6}},
		{name: "markers",
			in:   []ns{{Name: "stale", Score: neutralRaw}, {Name: "gone", Score: -1}, {Name: "a", Score: 7}, {Name: "b", Score: 3}},
			want: []int64{NeutralScore, 0, 100, 7}},
		{name: "a node without gpus is best for a cpu-only pod",
			in:   []ns{{Name: "cpu-1", Score: noGPUsRaw}, {Name: "gpu-1", Score: 9}, {Name: "gpu-2", Score: 9}},
			want: []int64{100, 99, 98}},
		{name: "the ranked stay ordered above the rest however far below the best",
			in: []ns{{Name: "a", Score: 1000}, {Name: "b", Score: 1}, {Name: "c", Score: 1}, {Name: "d", Score: 1}, {Name: "e", Score: 1},
				{Name: "f", Score: 1}, {Name: "g", Score: 1}, {Name: "h", Score: 1}, {Name: "i", Score: 1}, {Name: "j", Score: 0}},
			want: []int64{100, 7, 6, 5, 4, 3, 2, 1, 0, 0}},
		{name: "one judged node", in: []ns{{Name: "a", Score: 42}}, want: []int64{100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scores := slices.Clone(tt.in)
			normalize(scores)
			var got []int64
			for _, s := range scores {
				got = append(got, s.Score)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("normalize(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
