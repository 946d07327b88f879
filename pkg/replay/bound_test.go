package replay

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

func TestBoundSolveLP(t *testing.T) {
	tests := []struct {
		name   string
		a      [][]float64
		b, c   []float64
		want   lpStatus
		wantV  float64
		sumMax float64 // a bound on Σx for the certificates
	}{
		{
			name: "two constraints",
			a:    [][]float64{{1, 2}, {3, 1}},
			b:    []float64{4, 6}, c: []float64{1, 1},
			want: lpOptimal, wantV: 2.8, sumMax: 6,
		},
		{
			name: "lower bounds need phase one",
			a:    [][]float64{{1, 1}, {-1, 0}, {0, -1}},
			b:    []float64{5, -2, -1}, c: []float64{1, 2},
			want: lpOptimal, wantV: 8, sumMax: 5,
		},
		{
			name: "minimisation as maximisation",
			a:    [][]float64{{-1, -1}, {1, 1}},
			b:    []float64{-3, 10}, c: []float64{-1, -2},
			want: lpOptimal, wantV: -3, sumMax: 10,
		},
		{
			// Beale's example: Dantzig's rule cycles on it without an
			// anti-cycling rule.
			name: "Beale cycling example",
			a: [][]float64{
				{0.25, -8, -1, 9},
				{0.5, -12, -0.5, 3},
				{0, 0, 1, 0},
			},
			b: []float64{0, 0, 1}, c: []float64{0.75, -20, 0.5, -6},
			want: lpOptimal, wantV: 1.25,
		},
		{
			name: "infeasible",
			a:    [][]float64{{1, 1}, {-1, 0}},
			b:    []float64{1, -2}, c: []float64{1, 1},
			want: lpInfeasible, sumMax: 1,
		},
		{
			name: "infeasible through a combination",
			a:    [][]float64{{1, 1}, {-1, -2}, {0, 1}},
			b:    []float64{3, -7, 1}, c: []float64{1, 0},
			want: lpInfeasible, sumMax: 3,
		},
		{
			name: "unbounded",
			a:    [][]float64{{1, -1}},
			b:    []float64{1}, c: []float64{1, 1},
			want: lpUnbounded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, n := len(tt.a), len(tt.a[0])
			var a []float64
			for _, r := range tt.a {
				a = append(a, r...)
			}
			sol, err := solveLP(a, m, n, tt.b, tt.c)
			if err != nil {
				t.Fatalf("solveLP: %v", err)
			}
			if sol.status != tt.want {
				t.Fatalf("status %v, want %v", sol.status, tt.want)
			}
			switch tt.want {
			case lpOptimal:
				if math.Abs(sol.value-tt.wantV) > 1e-9 {
					t.Errorf("value %v, want %v", sol.value, tt.wantV)
				}
				for i := 0; i < m; i++ {
					var s float64
					for j := 0; j < n; j++ {
						s += a[i*n+j] * sol.x[j]
					}
					if s > tt.b[i]+1e-9 {
						t.Errorf("row %d: %v > %v at x = %v", i, s, tt.b[i], sol.x)
					}
				}
				if tt.sumMax > 0 {
					v, err := dualBound(a, m, n, tt.b, tt.c, sol.dual, tt.sumMax)
					if err != nil || math.Abs(v-tt.wantV) > 1e-9 {
						t.Errorf("dual bound %v (%v), want %v", v, err, tt.wantV)
					}
				}
			case lpInfeasible:
				if !farkas(a, m, n, tt.b, sol.dual, tt.sumMax) {
					t.Errorf("farkas vector %v does not prove infeasibility", sol.dual)
				}
			}
		})
	}
}

func TestBoundDualAndFarkasVectors(t *testing.T) {
	// max x1 + x2, x1 + 2 x2 ≤ 4, 3 x1 + x2 ≤ 6: optimum 2.8 with y = (0.4, 0.2).
	a := []float64{1, 2, 3, 1}
	b := []float64{4, 6}
	c := []float64{1, 1}
	if v, _ := dualBound(a, 2, 2, b, c, []float64{0.4, 0.2}, 6); math.Abs(v-2.8) > 1e-12 {
		t.Errorf("optimal duals: %v, want 2.8", v)
	}
	// A dual that is not feasible still gives a valid (looser) bound.
	if v, _ := dualBound(a, 2, 2, b, c, []float64{0, 0}, 6); v < 2.8 {
		t.Errorf("zero duals: %v < 2.8", v)
	}
	if v, _ := dualBound(a, 2, 2, b, c, []float64{-1, 0.2}, 6); v < 2.8 {
		t.Errorf("negative duals: %v < 2.8", v)
	}
	if farkas(a, 2, 2, b, []float64{1, 1}, 6) {
		t.Error("farkas accepted a feasible system")
	}
}

func TestBoundConfigLP(t *testing.T) {
	tests := []struct {
		name        string
		nGPU        int
		sizes       []int64
		arrivals    []int
		forced      []int
		whole       int
		wantConfigs int
		want        float64
		infeasible  bool
	}{
		{name: "pairs fill GPUs", nGPU: 2, sizes: []int64{600, 400}, arrivals: []int{2, 2}, forced: []int{0, 0},
			wantConfigs: 4, want: 2000},
		{name: "one partner", nGPU: 3, sizes: []int64{600, 400}, arrivals: []int{3, 1}, forced: []int{0, 0},
			wantConfigs: 3, want: 2200},
		{name: "whole GPUs beat shares", nGPU: 3, sizes: []int64{600, 400}, arrivals: []int{3, 1}, forced: []int{0, 0},
			whole: 2, wantConfigs: 3, want: 3000},
		{name: "forced shares take GPUs from whole pods", nGPU: 3, sizes: []int64{600, 400}, arrivals: []int{3, 1},
			forced: []int{2, 0}, whole: 3, wantConfigs: 3, want: 1000 + 600 + 1000},
		{name: "forced shares, fractional pairing", nGPU: 2, sizes: []int64{700, 300}, arrivals: []int{2, 1},
			forced: []int{2, 0}, whole: 2, wantConfigs: 3, want: 1700},
		{name: "forced beyond capacity", nGPU: 1, sizes: []int64{600}, arrivals: []int{2}, forced: []int{2},
			wantConfigs: 1, infeasible: true},
		{name: "forced beyond capacity by milli", nGPU: 2, sizes: []int64{400}, arrivals: []int{6}, forced: []int{6},
			wantConfigs: 2, infeasible: true},
		{name: "no shares", nGPU: 4, whole: 3, want: 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newConfigLP(tt.nGPU, tt.sizes, tt.arrivals)
			if len(p.configs) != tt.wantConfigs {
				t.Errorf("%d configurations %v, want %d", len(p.configs), p.configs, tt.wantConfigs)
			}
			out, err := p.solve(tt.forced, tt.whole)
			if err != nil {
				t.Fatalf("solve: %v", err)
			}
			if out.infeasible != tt.infeasible || out.relaxed {
				t.Fatalf("outcome %+v, want infeasible=%v", out, tt.infeasible)
			}
			if !tt.infeasible && math.Abs(out.value-tt.want) > 1e-6 {
				t.Errorf("value %v, want %v", out.value, tt.want)
			}
		})
	}
}

// bruteForceMax is the largest final used milli-GPU over every run the
// protocol allows on order: each pod goes to any node and GPUs that fit it
// whenever some exist (whole free GPUs of a node are interchangeable, and so
// are its GPUs with the same free milli for a shared pod).
func bruteForceMax(c *Cluster, tr *Trace, order []int) int64 {
	memo := map[string]int64{}
	var rec func(pos int, st *State) int64
	rec = func(pos int, st *State) int64 {
		if pos == len(order) {
			return st.UsedMilli
		}
		key := stateKey(pos, st)
		if v, ok := memo[key]; ok {
			return v
		}
		p := &tr.Pods[order[pos]]
		best, placed := int64(-1), false
		for n := range st.Nodes {
			if !st.Fits(p, n) {
				continue
			}
			var choices [][]int
			switch {
			case p.G <= 0:
				choices = [][]int{nil}
			case p.G == MilliPerGPU:
				choices = [][]int{WholeGPUs(nil, &st.Nodes[n], p.K)}
			default:
				seen := map[int64]bool{}
				for i, f := range st.Nodes[n].GPUFree {
					if f >= p.G && !seen[f] {
						seen[f] = true
						choices = append(choices, []int{i})
					}
				}
			}
			for _, gpus := range choices {
				next := cloneState(st)
				next.Commit(p, n, gpus)
				placed = true
				best = max(best, rec(pos+1, next))
			}
		}
		if !placed {
			best = rec(pos+1, st)
		}
		memo[key] = best
		return best
	}
	return rec(0, NewState(c))
}

func cloneState(st *State) *State {
	out := &State{Cluster: st.Cluster, Nodes: slices.Clone(st.Nodes), UsedMilli: st.UsedMilli}
	for i := range out.Nodes {
		out.Nodes[i].GPUFree = slices.Clone(st.Nodes[i].GPUFree)
	}
	return out
}

func stateKey(pos int, st *State) string {
	var b strings.Builder
	fmt.Fprint(&b, pos)
	for i := range st.Nodes {
		ns := &st.Nodes[i]
		free := slices.Clone(ns.GPUFree)
		slices.Sort(free)
		fmt.Fprintf(&b, "|%d,%d,%d,%v", ns.CPUFree, ns.MemFree, ns.Pods, free)
	}
	return b.String()
}

// randomBoundInstance is a tiny cluster (2-3 nodes of 1-2 GPUs, two models,
// small CPU, memory and sometimes pod limits) and 5-8 arrivals mixing shares
// of a few sizes, whole-GPU pods (1 or 2 GPUs), CPU-only pods and gpu_specs,
// some pods arriving twice.
func randomBoundInstance(t *testing.T, r *rand.Rand) (*Cluster, *Trace, []int) {
	t.Helper()
	var nodes []string
	for i := range 2 + r.Intn(2) {
		cpu, mem := 2000*(1+r.Intn(4)), 2000*(1+r.Intn(4))
		switch r.Intn(3) { // one resource plentiful, so the other binds alone
		case 0:
			cpu = 32000
		case 1:
			mem = 32000
		}
		nodes = append(nodes, fmt.Sprintf("n%d,%d,%d,%d,%s", i, cpu, mem, 1+r.Intn(2), []string{"A", "B"}[r.Intn(2)]))
	}
	c := newCluster(t, nodes...)
	for i := range c.Nodes {
		if r.Intn(4) == 0 {
			c.Nodes[i].PodLimit = 2 + r.Intn(2)
		}
	}
	shares := []int{250, 300, 500, 700}
	var pods []string
	for i := range 4 + r.Intn(4) {
		cpu, mem := 1000*(1+r.Intn(5)), 1000*(1+r.Intn(5))
		k, g := 1, 1000
		switch x := r.Intn(10); {
		case x < 5:
			g = shares[r.Intn(len(shares))]
		case x < 7:
		case x < 8:
			k = 2
		default:
			k, g = 0, 0
		}
		spec := ""
		if g > 0 && r.Intn(3) == 0 {
			spec = "A"
		}
		pods = append(pods, fmt.Sprintf("p%d,%d,%d,%d,%d,%s", i, cpu, mem, k, g, spec))
	}
	tr := newTrace(t, c, pods...)
	order := r.Perm(len(tr.Pods))
	for range r.Intn(3) {
		order = append(order, r.Intn(len(tr.Pods)))
	}
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return c, tr, order
}

func TestUpperBoundAboveBruteForce(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	tight := 0
	const instances = 3000
	for i := range instances {
		c, tr, order := randomBoundInstance(t, r)
		var corners []Corner
		for range 1 + r.Intn(3) {
			corners = append(corners, Corner{int64(1000 * (1 + r.Intn(5))), int64(1000 * (1 + r.Intn(5)))})
		}
		got, err := UpperBound(context.Background(), c, tr, order, BoundOptions{Corners: corners})
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		brute := bruteForceMax(c, tr, order)
		if float64(brute) > got.Used+1e-6 {
			t.Fatalf("instance %d: some run uses %d milli, above the bound %.3f (box %v)\nnodes %+v\npods %+v\norder %v\ncorners %v",
				i, brute, got.Used, got.Box, c.Nodes, tr.Pods, order, corners)
		}
		if float64(brute) > got.Used-1e-6 {
			tight++
		}
		if got.Relaxed != 0 {
			t.Errorf("instance %d: %d LPs solved relaxed", i, got.Relaxed)
		}
	}
	t.Logf("bound tight on %d of %d instances", tight, instances)
}

func TestUpperBoundTight(t *testing.T) {
	tests := []struct {
		name  string
		nodes []string
		pods  []string
		want  int64
	}{
		{
			// Both shares are forced (the whole pods come later), so they
			// take the two GPUs and the whole pods fail: 1400, where the LP
			// without forcing would give 2000.
			name:  "forced shares block whole pods",
			nodes: []string{"n0,32000,64000,2,A"},
			pods:  []string{"s1,1000,1000,1,700,", "s2,1000,1000,1,700,", "w1,8000,8000,1,1000,", "w2,8000,8000,1,1000,"},
			want:  1400,
		},
		{
			name:  "whole pod and a pair",
			nodes: []string{"n0,32000,64000,1,A", "n1,32000,64000,1,A"},
			pods:  []string{"w1,8000,8000,1,1000,", "s1,1000,1000,1,600,", "s2,1000,1000,1,600,", "s3,1000,1000,1,400,"},
			want:  2000,
		},
		{
			// s1 arrives before w2's placement on n0 but may only use model B,
			// whose GPU w1 holds: it fails, so it is not forced.
			name:  "a share with a gpu_spec is not forced",
			nodes: []string{"n0,32000,64000,1,A", "n1,32000,64000,1,B"},
			pods:  []string{"w1,8000,8000,1,1000,B", "s1,1000,1000,1,600,B", "w2,8000,8000,1,1000,"},
			want:  2000,
		},
		{
			name:  "shares fill one GPU",
			nodes: []string{"n0,32000,64000,1,A"},
			pods:  []string{"s1,1000,1000,1,500,", "s2,1000,1000,1,500,", "c1,1000,1000,0,0,"},
			want:  1000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.nodes...)
			tr := newTrace(t, c, tt.pods...)
			order := make([]int, len(tr.Pods))
			for i := range order {
				order[i] = slices.IndexFunc(tr.Pods, func(p Pod) bool { return p.Line == i+2 })
			}
			if brute := bruteForceMax(c, tr, order); brute != tt.want {
				t.Fatalf("brute force %d, want %d", brute, tt.want)
			}
			got, err := UpperBound(context.Background(), c, tr, order, BoundOptions{Corners: []Corner{{4000, 4000}}})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got.Used-float64(tt.want)) > 1e-6 {
				t.Errorf("bound %.6f, want %d (box %v)", got.Used, tt.want, got.Box)
			}
		})
	}
}

func TestUpperBoundAboveEveryPolicy(t *testing.T) {
	var nodes []string
	for i := range 12 {
		nodes = append(nodes, fmt.Sprintf("n%02d,%d,%d,%d,%s", i, 32000*(1+i%3), 131072*(1+i%2), []int{2, 4, 8}[i%3], []string{"A", "B"}[i%2]))
	}
	c := newCluster(t, nodes...)
	r := rand.New(rand.NewSource(7))
	var pods []string
	for i := range 80 {
		k, g := 1, []int{1000, 1000, 810, 470, 320, 650, 230, 1000}[r.Intn(8)]
		switch r.Intn(12) {
		case 0:
			k, g = 0, 0
		case 1:
			k, g = 2, 1000
		}
		spec := ""
		if r.Intn(10) == 0 {
			spec = "B"
		}
		pods = append(pods, fmt.Sprintf("p%03d,%d,%d,%d,%d,%s", i, 1000*(1+r.Intn(12)), 1024*(1+r.Intn(32)), k, g, spec))
	}
	tr := newTrace(t, c, pods...)
	opt := BoundOptions{Corners: []Corner{{6000, 16384}, {12000, 32768}}, MinWidth: 0.001}
	for seed := int64(1); seed <= 3; seed++ {
		order, _, _ := Arrivals(Stream(seed), tr, c.TotalGPUMilli(), DefaultTune)
		b, err := UpperBound(context.Background(), c, tr, order, opt)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		best := 0.0
		for _, pol := range Policies() {
			res, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: pol, Seed: seed, Tune: DefaultTune})
			if err != nil {
				t.Fatalf("seed %d, %s: %v", seed, pol.Name(), err)
			}
			if float64(res.Used) > b.Used+1e-6 {
				t.Errorf("seed %d, %s: used %d milli, above the bound %.3f", seed, pol.Name(), res.Used, b.Used)
			}
			best = max(best, 100*float64(res.Used)/float64(b.Capacity))
			// The curve's samples are rounded to 0.01 % twice.
			if at := res.Curve.At(MaxX); at > b.Percent+0.01 {
				t.Errorf("seed %d, %s: %.2f %% at %d %%, above the bound %.3f %%", seed, pol.Name(), at, MaxX, b.Percent)
			}
		}
		t.Logf("seed %d: %d arrivals, bound %.3f %% (%d LPs), best policy %.3f %%", seed, len(order), b.Percent, b.LPs, best)
	}
}

func TestUpperBoundRejectsSplitMultiGPUPods(t *testing.T) {
	c := newCluster(t, "n0,32000,64000,4,A")
	tr := newTrace(t, c, "a,1000,1000,1,500,", "b,1000,1000,2,500,")
	_, err := UpperBound(context.Background(), c, tr, []int{0, 1}, BoundOptions{})
	if err == nil || !strings.Contains(err.Error(), "pod b (line 3)") {
		t.Fatalf("error %v, want one naming pod b (line 3)", err)
	}
}

func TestUpperBoundOptions(t *testing.T) {
	c := newCluster(t, "n0,32000,64000,2,A")
	tr := newTrace(t, c, "a,1000,1000,1,500,", "w,8000,8000,1,1000,")
	ctx := context.Background()
	if _, err := UpperBound(ctx, c, tr, []int{0, 1}, BoundOptions{MinWidth: -1}); err == nil {
		t.Error("negative min width accepted")
	}
	if _, err := UpperBound(ctx, c, tr, []int{0, 5}, BoundOptions{}); err == nil {
		t.Error("an arrival out of range accepted")
	}
	if _, err := UpperBound(ctx, c, tr, []int{1, 0, 1, 0}, BoundOptions{MaxLPs: 1}); err == nil {
		t.Error("LP limit not enforced")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := UpperBound(cancelled, c, tr, []int{0, 1}, BoundOptions{}); err == nil {
		t.Error("cancelled context ignored")
	}
	got, err := UpperBound(ctx, c, tr, []int{0, 1}, BoundOptions{})
	if err != nil || got.Used != 1500 || got.Percent != 75 {
		t.Errorf("bound %+v (%v), want 1500 milli, 75 %%", got, err)
	}
}
