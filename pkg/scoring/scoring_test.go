package scoring

import (
	"math"
	"testing"
)

func newNode(cpu int64, free ...int64) *Node {
	return &Node{ModelID: 0, CPUFree: cpu, GPUFree: free}
}

func TestFragmentation(t *testing.T) {
	half := Shape{CPU: 1000, K: 1, G: 500, P: 0.5}
	whole := Shape{CPU: 1000, K: 1, G: 1000, P: 0.5}
	tests := []struct {
		name   string
		node   *Node
		shapes []Shape
		want   float64
	}{
		{"no shapes", newNode(8000, 1000, 300), nil, 0},
		// Both shapes fit on GPU 0; GPU 1's 300 milli is too small for
		// either: 0.5·300 + 0.5·300.
		{"fits, small gpu is fragment", newNode(8000, 1000, 300), []Shape{half, whole}, 300},
		// CPU lacks: every free milli is stranded for both shapes.
		{"cpu bottleneck strands all", newNode(500, 1000, 300), []Shape{half, whole}, 1300},
		{"two whole gpus do not fit", newNode(8000, 1000, 300), []Shape{{CPU: 1000, K: 2, G: 1000, P: 1}}, 1300},
		{"two whole gpus fit", newNode(8000, 1000, 1000, 200), []Shape{{CPU: 1000, K: 2, G: 1000, P: 1}}, 200},
		{"cpu-only shape", newNode(8000, 1000, 300), []Shape{{CPU: 1000, P: 1}}, 1300},
		{"model not allowed", newNode(8000, 1000, 300), []Shape{{CPU: 1000, K: 1, G: 100, P: 1, Allowed: []bool{false, true}}}, 1300},
		{"model allowed", newNode(8000, 1000, 50), []Shape{{CPU: 1000, K: 1, G: 100, P: 1, Allowed: []bool{true}}}, 50},
		{"full node", newNode(8000, 0, 0), []Shape{half, whole}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Fragmentation(tt.node, tt.shapes); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Fragmentation() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestScore(t *testing.T) {
	tests := []struct {
		name          string
		before, after float64
		freeAfter     int64
		wholeAfter    int
		w             Weights
		want          float64
		wantQuantized int64
	}{
		{"fragmentation only", 300, 100, 2000, 1, Weights{}, 200, 200000},
		// 200 − 0.001·2000 + 5·1.
		{"with packing terms", 300, 100, 2000, 1, Weights{BestFit: 0.001, WholeGPU: 5}, 203, 203000},
		{"placement adds fragmentation", 100, 100.5, 0, 0, Weights{}, -0.5, -500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Score(tt.before, tt.after, tt.freeAfter, tt.wholeAfter, tt.w)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Score() = %v, want %v", got, tt.want)
			}
			if q := Quantize(got); q != tt.wantQuantized {
				t.Errorf("Quantize(%v) = %d, want %d", got, q, tt.wantQuantized)
			}
		})
	}
}

func TestWorkload(t *testing.T) {
	a := Shape{CPU: 1000, K: 1, G: 500}
	b := Shape{CPU: 2000, K: 1, G: 1000}
	tests := []struct {
		name     string
		decay    float64
		coverage float64
		observe  []Shape
		want     []float64 // P of the returned shapes, in order
		wantG    []int64
	}{
		// Without decay, counts: a twice, b once.
		{"counts", 1, 1, []Shape{a, b, a}, []float64{2.0 / 3, 1.0 / 3}, []int64{500, 1000}},
		// Decay 0.5: a weighs 1, then b weighs 2 (older weight halved,
		// relatively): P(b) = 2/3.
		{"decay favours recent", 0.5, 1, []Shape{a, b}, []float64{2.0 / 3, 1.0 / 3}, []int64{1000, 500}},
		// Coverage 0.5 keeps b alone (2 of 3 ≥ 1.5) and renormalises.
		{"coverage cut", 0.5, 0.5, []Shape{a, b}, []float64{1}, []int64{1000}},
		{"empty", 1, 1, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wl := NewWorkload(tt.decay, tt.coverage)
			for _, s := range tt.observe {
				wl.Observe(s, "", 1)
			}
			got := wl.Shapes()
			if len(got) != len(tt.want) {
				t.Fatalf("Shapes() has %d shapes, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if math.Abs(got[i].P-tt.want[i]) > 1e-9 || got[i].G != tt.wantG[i] {
					t.Errorf("shape %d = (G %d, P %v), want (G %d, P %v)", i, got[i].G, got[i].P, tt.wantG[i], tt.want[i])
				}
			}
		})
	}
}

// benchShapes is a target workload of the size openb traces give (about
// 20 shapes covering 95 % of pods).
func benchShapes() []Shape {
	var s []Shape
	for i := range 20 {
		g := int64(50 * (i%10 + 1))
		k := 1
		if i >= 16 {
			g, k = 1000, 1<<(i-16)
		}
		s = append(s, Shape{CPU: int64(1000 * (i%8 + 1)), K: k, G: g, P: 1.0 / 20})
	}
	return s
}

// BenchmarkNodeScore measures one node Score as the tessera policy computes
// it: the node's fragmentation before the placement is cached per node (it
// only changes when the node or the target does), so a Score is one
// fragmentation of the node after the placement (FGD's, the expected hole
// residue and the CPU-stranded change) plus the packing terms.
func BenchmarkNodeScore(b *testing.B) {
	shapes := benchShapes()
	holes := NewHoleResidue(shapes, 1)
	ratio := GPUPerCPU(shapes)
	node := newNode(64000, 1000, 1000, 700, 1000, 250, 1000, 0, 1000)
	frag := func(n *Node) float64 { return Fragmentation(n, shapes) + 0.3*holes.Of(n) }
	before := frag(node)
	after := &Node{ModelID: 0, CPUFree: node.CPUFree - 4000, GPUFree: make([]int64, len(node.GPUFree))}
	w := Weights{BestFit: 0.001}
	var sink int64
	b.ReportAllocs()
	for b.Loop() {
		copy(after.GPUFree, node.GPUFree)
		after.GPUFree[2] -= 500
		var total int64
		whole := 0
		for _, f := range after.GPUFree {
			total += f
			if f == MilliPerGPU {
				whole++
			}
		}
		fa := frag(after) + 0.3*(CPUStranded(after, ratio)-CPUStranded(node, ratio))
		sink += Quantize(Score(before, fa, total, whole, w))
	}
	_ = sink
}

func TestHoleResidue(t *testing.T) {
	half := Shape{CPU: 1000, K: 1, G: 500, P: 1}
	big, small := Shape{K: 1, G: 600, P: 0.5}, Shape{K: 1, G: 300, P: 0.5}
	tests := []struct {
		name   string
		shapes []Shape
		model  int
		free   []int64
		want   []float64 // E at each free amount
	}{
		// Halves fill 1000 and 500 exactly; 700 keeps 200, 300 keeps all.
		{"one share size", []Shape{half}, 0, []int64{0, 300, 500, 700, 1000}, []float64{0, 300, 0, 200, 0}},
		// E(400) = E(100) = 100; E(700) = (E(100) + E(400))/2 = 100;
		// E(1000) = (E(400) + E(700))/2 = 100; E(900) = (E(300) + E(600))/2 = 0.
		{"two sizes pair up", []Shape{big, small}, 0, []int64{400, 500, 600, 700, 900, 1000}, []float64{100, 200, 0, 100, 0, 100}},
		{"whole-gpu shape uses a free gpu", []Shape{{CPU: 1000, K: 2, G: 1000, P: 1}}, 0, []int64{999, 1000}, []float64{999, 0}},
		{"cpu-only shapes are left out", []Shape{{CPU: 1000, P: 1}}, 0, []int64{1000}, []float64{1000}},
		{"model not allowed", []Shape{{K: 1, G: 500, P: 1, Allowed: []bool{false, true}}}, 0, []int64{1000}, []float64{1000}},
		{"model allowed", []Shape{{K: 1, G: 500, P: 1, Allowed: []bool{false, true}}}, 1, []int64{1000}, []float64{0}},
		{"model outside the table keeps all", []Shape{half}, 5, []int64{1000}, []float64{1000}},
		{"free clamped to the gpu", []Shape{half}, 0, []int64{-5, 1200}, []float64{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hr := NewHoleResidue(tt.shapes, 2)
			for i, f := range tt.free {
				if got := hr.At(tt.model, f); math.Abs(got-tt.want[i]) > 1e-9 {
					t.Errorf("At(%d, %d) = %v, want %v", tt.model, f, got, tt.want[i])
				}
			}
		})
	}
	t.Run("node sums its gpus", func(t *testing.T) {
		hr := NewHoleResidue([]Shape{big, small}, 1)
		n := &Node{ModelID: 0, CPUFree: 8000, GPUFree: []int64{400, 500, 1000, 0}}
		if got, want := hr.Of(n), 100.0+200+100; math.Abs(got-want) > 1e-9 {
			t.Errorf("Of() = %v, want %v", got, want)
		}
	})
}

func TestCPUStranded(t *testing.T) {
	tests := []struct {
		name  string
		node  *Node
		ratio float64
		want  float64
	}{
		// 1300 free milli-GPU, CPU feeds 1000·0.5 = 500 of them.
		{"cpu short", newNode(1000, 1000, 300), 0.5, 800},
		{"cpu enough", newNode(4000, 1000, 300), 0.5, 0},
		{"no cpu", newNode(0, 1000, 300), 0.5, 1300},
		{"no ratio", newNode(1000, 1000, 300), 0, 1300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CPUStranded(tt.node, tt.ratio); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("CPUStranded() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGPUPerCPU(t *testing.T) {
	tests := []struct {
		name   string
		shapes []Shape
		want   float64
	}{
		// (0.5·500 + 0.5·2·1000) / (0.5·1000 + 0.5·3000) = 1250/2000.
		{"mix", []Shape{{CPU: 1000, K: 1, G: 500, P: 0.5}, {CPU: 3000, K: 2, G: 1000, P: 0.5}}, 0.625},
		{"cpu only", []Shape{{CPU: 1000, P: 1}}, 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GPUPerCPU(tt.shapes); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("GPUPerCPU() = %v, want %v", got, tt.want)
			}
		})
	}
}
