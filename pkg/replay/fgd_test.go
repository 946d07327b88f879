package replay

import (
	"math"
	"math/rand"
	"testing"
)

// fgdFixture is one 4-GPU T4 node (plus a G2 node) and a hand-made target
// workload:
//
//	s1: CPU-only, cpu 4000, p 0.5           → x = L
//	s2: 1 × 500 milli, cpu 2000, p 0.25     → x = Σ f < 500 when it fits
//	s3: 2 × 1000 milli, cpu 8000, p 0.25    → x = Σ f < 1000 when it fits
func fgdFixture(t *testing.T, s3Spec string) (*State, *Fragmentation) {
	t.Helper()
	c := newCluster(t, "n0,32000,262144,4,T4", "n1,32000,262144,4,G2")
	tw := &TargetWorkload{Shapes: []Shape{
		{CPU: 4000, P: 0.5},
		{CPU: 2000, G: 500, K: 1, P: 0.25},
		{CPU: 8000, G: 1000, K: 2, P: 0.25, Spec: s3Spec},
	}}
	if s3Spec != "" {
		tw.Shapes[2].Allowed = make([]bool, len(c.Models))
		id, _ := c.modelID(s3Spec)
		tw.Shapes[2].Allowed[id] = true
	}
	st := NewState(c)
	return st, NewFragmentation(st, tw)
}

// setNode puts node n of st in the given state and refreshes f.
func setNode(st *State, f *Fragmentation, n int, cpuFree int64, gpuFree ...int64) {
	ns := nodeState(cpuFree, gpuFree...)
	ns.MemFree, ns.Version = st.Nodes[n].MemFree, st.Nodes[n].Version+1
	st.Nodes[n] = *ns
	f.refresh(n)
}

func TestFragmentationHandExamples(t *testing.T) {
	tests := []struct {
		name    string
		s3Spec  string
		cpuFree int64
		gpuFree []int64
		want    float64
	}{
		// L = 2300: s1 2300·0.5 + s2 300·0.25 (0 and 300 are < 500) +
		// s3 300·0.25 (two GPUs have 1000) = 1150 + 75 + 75.
		{"fits both", "", 16000, []int64{1000, 1000, 300, 0}, 1300},
		// CPU 4000 < 8000: s3 lacks CPU (Q4) → L: 1150 + 75 + 575.
		{"s3 lacks cpu", "", 4000, []int64{1000, 1000, 300, 0}, 1800},
		// One fully free GPU: s3 lacks GPUs → L.
		{"s3 lacks gpus", "", 16000, []int64{1000, 700, 300, 0}, 1000 + 0.25*300 + 0.25*2000},
		// s3 only for G2: no access on this T4 node → L.
		{"s3 no access", "G2", 16000, []int64{1000, 1000, 300, 0}, 1800},
		// CPU 1000: s1 lacks CPU (XR), s2 lacks CPU (Q4), s3 both (Q1): all L.
		{"no cpu", "", 1000, []int64{1000, 1000, 300, 0}, 2300},
		{"full node", "", 16000, []int64{0, 0, 0, 0}, 0},
		// Idle node: s2 and s3 fit with nothing small → only s1 counts.
		{"idle node", "", 32000, []int64{1000, 1000, 1000, 1000}, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, f := fgdFixture(t, tt.s3Spec)
			setNode(st, f, 0, tt.cpuFree, tt.gpuFree...)
			if got := f.Node(0); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("F = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFGDScoreHandExamples(t *testing.T) {
	st, f := fgdFixture(t, "")
	setNode(st, f, 0, 16000, 1000, 1000, 300, 0) // F = 1300
	tests := []struct {
		name    string
		pod     *Pod
		want    int64
		wantGPU int
	}{
		// On GPU 2 (300 → 100): F′ = 1050 + 25 + 25 = 1100, ΔF = 200,
		// σ(0.2) = 0.5498 → 54. On GPU 0 (1000 → 800): s3 loses its
		// second free GPU, F′ = 1050 + 75 + 525 = 1650, σ(−0.35) → 41.
		// GPU 1 equals GPU 0 and loses the tie.
		{"shared", podOf(1000, 1, 200), 54, 2},
		// Takes GPU 0: F′ = 650 + 75 + 325 = 1050, ΔF = 250, σ(0.25) → 56.
		{"whole gpu", podOf(4000, 1, 1000), 56, -1},
		// F unchanged (cpu 12000 still fits every shape): σ(0) = 0.5 → 50.
		{"cpu only", podOf(4000, 0, 0), 50, -1},
		// Both free GPUs: F′ = 150 + 75 + 75 = 300 (s2: 300 only), ΔF = 1000,
		// σ(1) = 0.7311 → 73.
		{"two whole gpus", podOf(8000, 2, 1000), 73, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			score, gpu := f.best(tt.pod, 0)
			if score != tt.want || gpu != tt.wantGPU {
				t.Errorf("score, gpu = %d, %d; want %d, %d", score, gpu, tt.want, tt.wantGPU)
			}
			if f.Score(tt.pod, 0) != tt.want {
				t.Error("Score disagrees with best")
			}
		})
	}
	if got := f.SharedGPU(podOf(1000, 1, 200), 0); got != 2 {
		t.Errorf("SharedGPU = %d, want 2", got)
	}
}

// directFrag computes F from the protocol's definition, shape by shape and
// GPU by GPU, with no caches.
func directFrag(shapes []Shape, model int, cpuFree int64, gpuFree []int64) float64 {
	var b [fragCategories]float64
	var all int64
	for _, f := range gpuFree {
		all += f
	}
	for _, s := range shapes {
		var cat int
		amount := all
		switch {
		case s.G == 0 && cpuFree >= s.CPU:
			cat = fragXL
		case s.G == 0:
			cat = fragXR
		case !s.AllowsModel(model):
			cat = fragNA
		default:
			fit, small := 0, int64(0)
			for _, f := range gpuFree {
				if f >= s.G {
					fit++
				} else {
					small += f
				}
			}
			switch {
			case fit >= max(s.K, 1) && cpuFree >= s.CPU:
				cat, amount = fragQ2, small
			case fit >= max(s.K, 1):
				cat = fragQ4
			case cpuFree >= s.CPU:
				cat = fragQ2
			default:
				cat = fragQ1
			}
		}
		b[cat] += float64(s.P * float64(amount))
	}
	var out float64
	for i, v := range b {
		if i != fragQ3 {
			out += v
		}
	}
	return out
}

// TestFragmentationIncremental checks the cached per-shape counts against
// the direct definition on random node states and placements.
func TestFragmentationIncremental(t *testing.T) {
	c := newCluster(t, "n0,64000,262144,8,T4")
	shapes := []Shape{
		{CPU: 4000, P: 0.2},
		{CPU: 6000, G: 460, K: 1, P: 0.3},
		{CPU: 2000, G: 250, K: 1, P: 0.1},
		{CPU: 12000, G: 1000, K: 1, P: 0.25},
		{CPU: 32000, G: 1000, K: 4, P: 0.1},
		{CPU: 8000, G: 1000, K: 2, P: 0.05, Allowed: []bool{false}},
	}
	r := rand.New(rand.NewSource(1))
	for iter := range 500 {
		st := NewState(c)
		f := NewFragmentation(st, &TargetWorkload{Shapes: shapes})
		gpus := make([]int64, 8)
		for i := range gpus {
			gpus[i] = []int64{0, 1000, int64(r.Intn(1001))}[r.Intn(3)]
		}
		setNode(st, f, 0, int64(r.Intn(64001)), gpus...)
		if got, want := f.Node(0), directFrag(shapes, 0, st.Nodes[0].CPUFree, gpus); got != want {
			t.Fatalf("iter %d: F = %v, direct %v (gpus %v)", iter, got, want, gpus)
		}
		pod := podOf(int64(r.Intn(8000)), 1, int64(1+r.Intn(999)))
		if r.Intn(2) == 0 {
			pod = podOf(int64(r.Intn(8000)), 1+r.Intn(2), 1000)
		}
		if !st.Fits(pod, 0) {
			continue
		}
		// The score must equal the one computed from the direct F of the
		// node after the placement the scorer would make.
		score, gpu := f.best(pod, 0)
		after := append([]int64(nil), gpus...)
		if pod.Shared() {
			after[gpu] -= pod.G
		} else {
			for _, i := range WholeGPUs(nil, &st.Nodes[0], pod.K) {
				after[i] -= pod.G
			}
		}
		want := fgdScore(directFrag(shapes, 0, st.Nodes[0].CPUFree, gpus),
			directFrag(shapes, 0, st.Nodes[0].CPUFree-pod.CPU, after))
		if score != want {
			t.Fatalf("iter %d: score %d, direct %d", iter, score, want)
		}
		if pod.Shared() {
			for i, free := range gpus {
				if free < pod.G {
					continue
				}
				alt := append([]int64(nil), gpus...)
				alt[i] -= pod.G
				s := fgdScore(directFrag(shapes, 0, st.Nodes[0].CPUFree, gpus),
					directFrag(shapes, 0, st.Nodes[0].CPUFree-pod.CPU, alt))
				if s > score || (s == score && i < gpu) {
					t.Fatalf("iter %d: gpu %d scores %d, better than chosen %d (%d)", iter, i, s, gpu, score)
				}
			}
		}
	}
}
