package replay

import (
	"reflect"
	"strings"
	"testing"
)

func TestDotProdScore(t *testing.T) {
	tests := []struct {
		name string
		ns   *NodeState
		pod  *Pod
		want int64
	}{
		// d = (64000/128000)(8000/128000) + (4000/8000)(500/8000) = 0.0625;
		// 100·(1 − 0.0625/2) = 96.875.
		{"half free", nodeState(64000, 1000, 1000, 1000, 1000, 0, 0, 0, 0), podOf(8000, 1, 500), 96},
		// d = 1·1 + 1·1 = 2 → 0.
		{"largest node, largest pod", nodeState(128000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000), podOf(128000, 8, 1000), 0},
		// d = (32000/128000)(4000/128000) = 0.0078125 → 99.6 → 99.
		{"cpu only", nodeState(32000, 1000, 1000), podOf(4000, 0, 0), 99},
		{"cpu short", nodeState(1000, 1000), podOf(4000, 0, 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dotProdScore(tt.ns, tt.pod); got != tt.want {
				t.Errorf("score = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestClusteringScore(t *testing.T) {
	// L = 2000 free: base = 25·6000 div 8000 = 18.
	tests := []struct {
		name string
		tags map[int]int
		tag  int
		want int64
	}{
		{"only this tag", map[int]int{0: 3}, 0, 93},
		{"this tag and others", map[int]int{0: 1, 2: 1}, 0, 68},
		{"no gpu pods", nil, 1, 43},
		{"only other tags", map[int]int{8: 1}, 1, 18},
		{"1-gpu is not share", map[int]int{0: 2}, 1, 18},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clusteringScore(2000, tt.tags, tt.tag); got != tt.want {
				t.Errorf("score = %d, want %d", got, tt.want)
			}
		})
	}
	if clusterTag(podOf(1000, 1, 500)) != 0 || clusterTag(podOf(1000, 1, 1000)) != 1 || clusterTag(podOf(1000, 4, 1000)) != 4 {
		t.Error("cluster tags: want share=0, k-gpu=k")
	}
}

func TestPackingScore(t *testing.T) {
	tests := []struct {
		name string
		ns   *NodeState
		pod  *Pod
		want int64
	}{
		{"idle 8-gpu node", nodeState(1, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000), podOf(1, 1, 1000), 25},
		{"idle 2-gpu node", nodeState(1, 1000, 1000), podOf(1, 1, 300), 31},
		{"idle 1-gpu node", nodeState(1, 1000), podOf(1, 1, 300), 32},
		// Ascending free: 0, 300, 1000, 1000 → the two free GPUs: 50 − 2.
		{"free gpus on a used node", nodeState(1, 1000, 300, 1000, 0), podOf(1, 2, 1000), 48},
		// 300 < 500 is skipped; the free GPU is used: 50 − 1.
		{"share needs a free gpu", nodeState(1, 300, 1000), podOf(1, 1, 500), 49},
		// Takes the 400 GPU: 100 − (400·100/1000)/10 = 96.
		{"share on a used gpu", nodeState(1, 600, 400, 1000), podOf(1, 1, 300), 96},
		{"share on an almost free gpu", nodeState(1, 990, 1000), podOf(1, 1, 100), 91},
		// Two partial GPUs: r = 90 + 80 = 170 → 100 − 17.
		{"two partial gpus", nodeState(1, 900, 800, 0), podOf(1, 2, 500), 83},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := packingScore(tt.ns, tt.pod, nil); got != tt.want {
				t.Errorf("score = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestBestFitScore(t *testing.T) {
	// 0.5·56000/128000 + 0.5·3000/8000 = 0.40625 → 59.375 → 59.
	if got := bestFitScore(nodeState(64000, 1000, 1000, 1000, 1000, 0, 0, 0, 0), podOf(8000, 1, 1000)); got != 59 {
		t.Errorf("score = %d, want 59", got)
	}
	// A perfect fit leaves nothing: 100.
	if got := bestFitScore(nodeState(8000, 1000), podOf(8000, 1, 1000)); got != 100 {
		t.Errorf("score = %d, want 100", got)
	}
	tests := []struct {
		in, want []int64
	}{
		{[]int64{59, 70, 80}, []int64{0, 52, 100}},
		{[]int64{42, 42}, []int64{0, 0}},
		{[]int64{-10, 90}, []int64{0, 100}},
	}
	for _, tt := range tests {
		got := append([]int64(nil), tt.in...)
		normalizeMinMax(got)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("normalizeMinMax(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestShareGPUSelection(t *testing.T) {
	ns := nodeState(1, 1000, 300, 250, 300, 1000)
	if got := BestShareGPU(ns, 250); got != 2 {
		t.Errorf("best for 250 = %d, want 2 (least free that fits)", got)
	}
	if got := BestShareGPU(ns, 260); got != 1 {
		t.Errorf("best for 260 = %d, want 1 (lowest index among equals)", got)
	}
	if got := BestShareGPU(ns, 400); got != 0 {
		t.Errorf("best for 400 = %d, want 0 (fully free GPUs are candidates)", got)
	}
	if got := BestShareGPU(ns, 1001); got != -1 {
		t.Errorf("best for 1001 = %d, want -1", got)
	}
	if got := WholeGPUs(nil, nodeState(1, 300, 1000, 1000, 1000), 2); !reflect.DeepEqual(got, []int{1, 2}) {
		t.Errorf("whole = %v", got)
	}

	// Random: reservoir sampling over the fitting GPUs in index order, one
	// Intn(c) per candidate.
	st := &State{Nodes: []NodeState{*nodeState(1, 100, 500, 1000, 500)}}
	s := &randomScorer{r: Stream(7), st: st}
	r := Stream(7)
	want := -1
	for i, c := range []int{1, 2, 3} {
		if r.Intn(c) == 0 {
			want = []int{1, 2, 3}[i]
		}
	}
	if got := s.SharedGPU(podOf(1, 1, 500), 0); got != want {
		t.Errorf("random gpu = %d, want %d", got, want)
	}
}

func TestParsePolicies(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"fgd,BestFit", []string{"FGD", "BestFit"}, ""},
		{"all", []string{"Random", "DotProd", "GpuClustering", "GpuPacking", "BestFit", "FGD"}, ""},
		{"fgd, fgd ,all", []string{"FGD", "Random", "DotProd", "GpuClustering", "GpuPacking", "BestFit"}, ""},
		{"tessera,fgd", []string{"Tessera", "FGD"}, ""},
		{"nope", nil, `unknown policy "nope": allowed values are random, dotprod, gpuclustering, gpupacking, bestfit, fgd, tessera, tessera-online, tessera-cross or all`},
		{" , ", nil, "no policy given"},
	}
	for _, tt := range tests {
		got, err := ParsePolicies(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePolicies(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParsePolicies(%q): %v", tt.in, err)
		}
		var names []string
		for _, p := range got {
			names = append(names, p.Name())
		}
		if !reflect.DeepEqual(names, tt.want) {
			t.Errorf("ParsePolicies(%q) = %v, want %v", tt.in, names, tt.want)
		}
	}
}
