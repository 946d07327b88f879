package replay

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
)

func TestStream(t *testing.T) {
	r := rand.New(rand.NewSource(42))
	_ = r.Int()
	s := Stream(42)
	for range 5 {
		if a, b := r.Int63(), s.Int63(); a != b {
			t.Fatalf("Stream(42) is not the seeded stream after one Int: %d != %d", a, b)
		}
	}
}

func demandOf(tr *Trace, order []int) int64 {
	var s int64
	for _, i := range order {
		s += tr.Pods[i].Demand()
	}
	return s
}

func TestArrivalsTuneUp(t *testing.T) {
	// 8 GPUs = 8000 milli; tune 1.3 → T = 10400. One 8-GPU pod (8000) and
	// CPU-only pods: S = 8000 < T.
	c := newCluster(t, "n0,128000,1048576,8,G2")
	rows := append([]string{"g-0,1000,1000,8,1000,"}, podRows("c", 9, 1000, 1000, 0, 0, "")...)
	tr := newTrace(t, c, rows...)
	n := len(tr.Pods)
	for seed := int64(1); seed <= 20; seed++ {
		order, added, removed := Arrivals(Stream(seed), tr, c.TotalGPUMilli(), 1.3)
		if removed != 0 || added != len(order)-n {
			t.Fatalf("seed %d: added %d removed %d with %d arrivals", seed, added, removed, len(order))
		}
		// The first n arrivals are a shuffle of every pod, drawn first.
		r := Stream(seed)
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		r.Shuffle(n, func(i, j int) { want[i], want[j] = want[j], want[i] })
		if !slices.Equal(order[:n], want) {
			t.Fatalf("seed %d: shuffled part %v, want %v", seed, order[:n], want)
		}
		// The appended pods are Intn(n) draws into the name-sorted list, in
		// draw order (not reshuffled), up to and excluding the first GPU pod
		// whose per-GPU request would cross T.
		var tuned []int
		s := tr.TotalDemand()
		for {
			i := r.Intn(n)
			if float64(s+tr.Pods[i].G) > 10400 {
				break
			}
			tuned = append(tuned, i)
			s += tr.Pods[i].Demand()
		}
		if !slices.Equal(order[n:], tuned) {
			t.Fatalf("seed %d: appended %v, want %v", seed, order[n:], tuned)
		}
		// The stop rule compares per-GPU g: 8000 + 1000 <= 10400, so one
		// copy of the 8-GPU pod is appended and the demand overshoots to
		// 16000 (a k·g rule would have stopped at 8000).
		if got := demandOf(tr, order); got != 16000 {
			t.Fatalf("seed %d: tuned demand %d, want 16000", seed, got)
		}
		g := n - 1 // "g-0" sorts after the "c-…" pods
		if copies := slices.Index(order[n:], g); copies < 0 || slices.Contains(order[n+copies+1:], g) {
			t.Fatalf("seed %d: appended %v, want exactly one copy of the 8-GPU pod", seed, order[n:])
		}
	}
}

func TestArrivalsTuneDown(t *testing.T) {
	// 2 GPUs = 2000 milli; tune 1.3 → T = 2600; 8 pods of 500 = 4000 plus
	// CPU-only pods, which may be removed too.
	c := newCluster(t, "n0,128000,1048576,2,T4")
	rows := append(podRows("g", 8, 1000, 1000, 1, 500, ""), podRows("c", 4, 1000, 1000, 0, 0, "")...)
	tr := newTrace(t, c, rows...)
	n := len(tr.Pods)
	cpuRemoved := false
	for seed := int64(1); seed <= 30; seed++ {
		order, added, removed := Arrivals(Stream(seed), tr, c.TotalGPUMilli(), 1.3)
		r := Stream(seed)
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		r.Shuffle(n, func(i, j int) { want[i], want[j] = want[j], want[i] })
		nRemoved := 0
		for s := tr.TotalDemand(); float64(s) > 2600; nRemoved++ {
			i := r.Intn(len(want))
			s -= tr.Pods[want[i]].Demand()
			if tr.Pods[want[i]].G == 0 {
				cpuRemoved = true
			}
			want = append(want[:i], want[i+1:]...)
		}
		if added != 0 || removed != nRemoved || !slices.Equal(order, want) {
			t.Fatalf("seed %d: order %v (added %d removed %d), want %v", seed, order, added, removed, want)
		}
		if d := demandOf(tr, order); d > 2600 || d < 2600-500 {
			t.Fatalf("seed %d: tuned demand %d", seed, d)
		}
	}
	if !cpuRemoved {
		t.Error("no seed removed a CPU-only pod; removal must draw over the whole list")
	}
}

func TestArrivalsNoTune(t *testing.T) {
	c := newCluster(t, "n0,128000,1048576,2,T4")
	tr := newTrace(t, c, podRows("c", 5, 1000, 1000, 0, 0, "")...)
	// Only CPU pods: tuning up could never stop, so it is skipped.
	if order, added, _ := Arrivals(Stream(1), tr, 2000, 1.3); len(order) != 5 || added != 0 {
		t.Errorf("cpu-only trace: %d arrivals, %d added", len(order), added)
	}
	if order, _, _ := Arrivals(Stream(1), tr, 2000, 0); len(order) != 5 {
		t.Errorf("tune 0: %d arrivals", len(order))
	}
}

// recorder is a test policy: it scores nodes from a fixed table and records
// the calls the replay makes, through the same interface Tessera's policy
// will use.
type recorder struct {
	scores    map[int]int64 // by node; missing = 0
	preScores int
	scored    [][]int
	committed []int
}

func (r *recorder) Name() string { return "Recorder" }

func (r *recorder) NewScorer(*Run) Scorer { return r }

func (r *recorder) PreScore(_ *Pod, feasible []int) {
	r.preScores++
	r.scored = append(r.scored, append([]int(nil), feasible...))
}

func (r *recorder) Score(_ *Pod, n int) int64 { return r.scores[n] }

func (r *recorder) SharedGPU(*Pod, int) int { return 0 }

func (r *recorder) Committed(_ *Pod, n int, _ []int) { r.committed = append(r.committed, n) }

func TestReplayTieBreakAndShortcut(t *testing.T) {
	c := newCluster(t, "a,8000,8192,1,T4", "b,8000,8192,1,T4", "c,8000,8192,1,T4", "d,8000,8192,1,G2")
	tr := newTrace(t, c, "p0,1000,1024,0,0,", "p1,1000,1024,1,1000,G2")
	const seed = 5
	r := Stream(seed)
	order, _, _ := Arrivals(r, tr, c.TotalGPUMilli(), 0)
	rank := r.Perm(len(c.Nodes))
	best := 0
	for n := range rank {
		if rank[n] < rank[best] {
			best = n
		}
	}

	rec := &recorder{scores: map[int]int64{}}
	res, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: rec, Seed: seed, KeepEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	// The CPU pod sees four feasible nodes, all scoring 0: the smallest
	// rank wins. The G2 pod has one feasible node: no scoring at all.
	if rec.preScores != 1 || len(rec.scored[0]) != 4 {
		t.Errorf("prescore calls %d, feasible %v", rec.preScores, rec.scored)
	}
	for _, e := range res.Events {
		switch tr.Pods[e.Pod].Name {
		case "p0":
			if e.Node != best {
				t.Errorf("cpu pod went to %d, want smallest rank %d (ranks %v)", e.Node, best, rank)
			}
		case "p1":
			if e.Node != 3 || !slices.Equal(e.GPUs, []int{0}) {
				t.Errorf("G2 pod went to %d %v, want node d gpu 0", e.Node, e.GPUs)
			}
		}
	}
	if len(rec.committed) != 2 || !slices.Equal(order, []int{res.Events[0].Pod, res.Events[1].Pod}) {
		t.Errorf("commits %v, order %v", rec.committed, order)
	}

	// A higher score beats rank.
	worst := 0
	for n := range rank {
		if rank[n] > rank[worst] {
			worst = n
		}
	}
	rec = &recorder{scores: map[int]int64{worst: 1}}
	res, err = Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: rec, Seed: seed, KeepEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Events {
		if tr.Pods[e.Pod].Name == "p0" && e.Node != worst {
			t.Errorf("cpu pod went to %d, want the best-scoring node %d", e.Node, worst)
		}
	}
}

// TestReplayTiny replays a small synthetic trace end to end under every
// baseline and checks what holds whatever the policy.
func TestReplayTiny(t *testing.T) {
	c := newCluster(t,
		"n0,32000,131072,4,T4", "n1,32000,131072,4,T4", "n2,64000,262144,8,G2", "n3,16000,65536,2,P100")
	var rows []string
	rows = append(rows, podRows("share", 12, 4000, 8192, 1, 300, "")...)
	rows = append(rows, podRows("half", 6, 4000, 8192, 1, 500, "T4")...)
	rows = append(rows, podRows("one", 6, 6000, 8192, 1, 1000, "")...)
	rows = append(rows, podRows("two", 2, 12000, 16384, 2, 1000, "G2")...)
	rows = append(rows, podRows("cpu", 6, 2000, 4096, 0, 0, "")...)
	tr := newTrace(t, c, rows...)
	capacity := c.TotalGPUMilli() // 18000; tuned to 23400
	for _, p := range Baselines() {
		t.Run(p.Name(), func(t *testing.T) {
			res, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: p, Seed: 3, Tune: DefaultTune, KeepEvents: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Placed+res.Failed != res.Pods || res.Pods != len(tr.Pods)+res.Added {
				t.Errorf("pods %d = placed %d + failed %d, %d added", res.Pods, res.Placed, res.Failed, res.Added)
			}
			if float64(res.Arrived) > 1.3*float64(capacity)+1000 || res.Used > capacity || res.Used > res.Arrived {
				t.Errorf("arrived %d, used %d of %d", res.Arrived, res.Used, capacity)
			}
			// Replaying the events on a fresh state must be feasible at
			// every step and reproduce the used capacity.
			st := NewState(c)
			for i, e := range res.Events {
				p := &tr.Pods[e.Pod]
				if e.Node < 0 {
					continue
				}
				if !st.Fits(p, e.Node) {
					t.Fatalf("event %d: pod %s does not fit node %d", i, p.Name, e.Node)
				}
				for _, g := range e.GPUs {
					if st.Nodes[e.Node].GPUFree[g] < p.G {
						t.Fatalf("event %d: gpu %d of node %d lacks %d milli", i, g, e.Node, p.G)
					}
				}
				if p.G > 0 && len(e.GPUs) != p.K {
					t.Fatalf("event %d: pod %s got gpus %v", i, p.Name, e.GPUs)
				}
				st.Commit(p, e.Node, e.GPUs)
				if st.UsedMilli != e.Used {
					t.Fatalf("event %d: used %d, replayed %d", i, e.Used, st.UsedMilli)
				}
			}
			// A tiny trace leaves holes in the curve, but it starts at 0
			// and never exceeds the final allocation.
			final := RoundHalfEven(float64(res.Used)/float64(c.TotalGPUs())/10, 2)
			if res.Curve.At(0) != 0 {
				t.Errorf("curve at 0 = %v", res.Curve.At(0))
			}
			for x, v := range res.Curve {
				if v > final {
					t.Errorf("curve at %d = %v above the final %v", x, v, final)
				}
			}
			// Same seed, same result.
			again, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: p, Seed: 3, Tune: DefaultTune})
			if err != nil {
				t.Fatal(err)
			}
			if again.Curve != res.Curve && !reflect.DeepEqual(fmt.Sprint(again.Curve), fmt.Sprint(res.Curve)) {
				t.Error("replay is not deterministic for a seed")
			}
		})
	}
}

func TestReplayCancel(t *testing.T) {
	c := newCluster(t, "n0,32000,131072,4,T4")
	tr := newTrace(t, c, podRows("p", 10, 1000, 1000, 1, 100, "")...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Replay(ctx, RunSpec{Cluster: c, Trace: tr, Policy: FGD{}, Seed: 1})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr}); err == nil {
		t.Error("a replay without policy must fail")
	}
}
