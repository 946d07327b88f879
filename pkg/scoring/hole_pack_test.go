package scoring

import (
	"testing"
)

// packScorer is a scorer with the small fixtures of the packing tests.
type packScorer struct {
	t *testing.T
	*Scorer
}

func newPackScorer(t *testing.T) packScorer {
	t.Helper()
	s, err := NewScorer(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return packScorer{t: t, Scorer: s}
}

// req compiles a demand of 1 CPU and 4 GiB besides its GPUs.
func (p packScorer) req(d Demand) *Request {
	p.t.Helper()
	d.CPU, d.Memory = 1000, 4<<10
	r, err := p.Compile(d)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// node adds a node of gpus GPUs of product, each of units share units
// (0: whole GPUs).
func (p packScorer) node(name, product string, gpus, units int) *NodeCache {
	p.t.Helper()
	spec := NodeSpec{Name: name, CPU: 64000, Memory: 1 << 30}
	for range gpus {
		spec.GPUs = append(spec.GPUs, GPUSpec{Product: product, NUMANode: -1, Healthy: true, ShareUnits: units})
	}
	st, err := NewNodeState(spec)
	if err != nil {
		p.t.Fatal(err)
	}
	n, err := p.NewNode(st)
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}

// TestHolePackSmallCluster mimics the e2e fleet (test/e2e TestFleet): a
// small cluster whose one time-shared node has 4 GPUs in quarters, and
// notebooks of 1, 1 and 2 units that arrive after a few whole-GPU pods.
// They must share one GPU. The target refreshes as the 2-unit pod arrives,
// so the hole census sees the 2-unit hole the first two left: the pods to
// come are expected to fill it, and were a GPU with every unit free counted
// as opened for sure (by pods that leave a 3-unit hole no one fills), a
// fresh GPU would look worse than that hole and the 2-unit pod would open
// one rather than fill it.
func TestHolePackSmallCluster(t *testing.T) {
	s := newPackScorer(t)
	mk, add := s.req, s.node
	add("h100", "H100", 8, 0)
	add("l40s", "L40S", 4, 0)
	ts := add("ts", "L40S", 4, 4)
	for _, d := range []Demand{{GPUs: 4}, {GPUs: 4}, {GPUs: 4}, {GPUs: 1}, {GPUs: 1}} {
		s.Observe(mk(d))
	}
	var gpus []int
	for _, u := range []int{1, 1, 2} {
		r := mk(Demand{ShareUnits: u, UnitsPerGPU: 4})
		s.Observe(r)
		res := s.Score(ts, r)
		if res.Err != nil {
			t.Fatalf("%d-unit pod: %v", u, res.Err)
		}
		if err := ts.Assume(r, res.Assignment); err != nil {
			t.Fatalf("%d-unit pod: %v", u, err)
		}
		gpus = append(gpus, res.Assignment.GPUs[0])
	}
	if gpus[0] != gpus[1] || gpus[1] != gpus[2] {
		t.Errorf("the 1-, 1- and 2-unit pods went to GPUs %v, want one GPU", gpus)
	}
}

// TestHolePackAfterCensus places a 2-unit pod beside a 2-unit hole that
// the census of the epoch counts (as in the e2e fleet, where the target
// refreshes between the notebooks): a target of 4-GPU pods and 1-unit
// share pods, whose pods to come (about 1.8 on the time-shared GPUs) are
// expected to fill the hole and to open one of the three fresh GPUs now
// and then. The pod must fill the hole: a second hole of 2 units would
// compete with it for those pods.
func TestHolePackAfterCensus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		whole int // whole GPUs beside the time-shared node
	}{
		{"e2e-sized cluster", 8},
		{"a few more whole GPUs", 16},
		{"no whole GPUs", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPackScorer(t)
			mk := s.req
			add := func(name string, gpus, units int) *NodeCache { return s.node(name, "L40S", gpus, units) }
			if tc.whole > 0 {
				add("whole", tc.whole, 0)
			}
			ts := add("ts", 4, 4)
			one := mk(Demand{ShareUnits: 1, UnitsPerGPU: 4})
			for range 2 {
				if err := ts.Assume(one, Assignment{GPUs: []int{0}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.SetTarget([]*Request{mk(Demand{GPUs: 4}), one}, []float64{0.75, 0.25}); err != nil {
				t.Fatal(err)
			}
			res := s.Score(ts, mk(Demand{ShareUnits: 2, UnitsPerGPU: 4}))
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if g := res.Assignment.GPUs[0]; g != 0 {
				t.Errorf("the 2-unit pod went to GPU %d, want GPU 0 (2 units free) rather than a fresh one", g)
			}
		})
	}
}
