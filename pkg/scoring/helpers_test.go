package scoring_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// machines caches discovered simulated machines by backend spec.
var machines sync.Map

// machine discovers a built-in simulated machine ("dgx-h100"), optionally
// with MIG layouts applied first: migLayout maps a GPU index to the
// profiles FillMIG creates on it.
func machine(tb testing.TB, name string, migLayout map[int][]string) *gpu.Machine {
	tb.Helper()
	key := name
	for i := range 8 {
		for _, p := range migLayout[i] {
			key += "," + p
		}
		key += ";"
	}
	if m, ok := machines.Load(key); ok {
		return m.(*gpu.Machine)
	}
	ctx := context.Background()
	b, err := backend.Open(ctx, "sim:"+name)
	if err != nil {
		tb.Fatalf("opening sim:%s: %v", name, err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			tb.Errorf("closing sim:%s: %v", name, err)
		}
	}()
	for i, profiles := range migLayout {
		gputest.FillMIG(tb, b, i, profiles...)
	}
	m, err := b.Discover(ctx)
	if err != nil {
		tb.Fatalf("discovering sim:%s: %v", name, err)
	}
	machines.Store(key, m)
	return m
}

// nodeState builds a node's state from a simulated machine with 2000 CPUs
// and 2 TiB free, so that only GPUs matter unless a test says otherwise.
func nodeState(tb testing.TB, name, machineName string, migLayout map[int][]string) scoring.NodeState {
	tb.Helper()
	st, err := scoring.NewNodeState(scoring.SpecFromMachine(name, machine(tb, machineName, migLayout), 2000_000, 2<<20))
	if err != nil {
		tb.Fatalf("NewNodeState(%s): %v", name, err)
	}
	return st
}

func newScorer(tb testing.TB, mutate func(*scoring.Config)) *scoring.Scorer {
	tb.Helper()
	cfg := scoring.DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := scoring.NewScorer(cfg)
	if err != nil {
		tb.Fatalf("NewScorer: %v", err)
	}
	return s
}

func newNode(tb testing.TB, s *scoring.Scorer, st scoring.NodeState) *scoring.NodeCache {
	tb.Helper()
	n, err := s.NewNode(st)
	if err != nil {
		tb.Fatalf("NewNode(%s): %v", st.Name, err)
	}
	return n
}

func compile(tb testing.TB, s *scoring.Scorer, d scoring.Demand) *scoring.Request {
	tb.Helper()
	r, err := s.Compile(d)
	if err != nil {
		tb.Fatalf("Compile(%+v): %v", d, err)
	}
	return r
}

// take scores r on n and assumes the result, failing when it does not fit.
func take(tb testing.TB, s *scoring.Scorer, n *scoring.NodeCache, r *scoring.Request) scoring.Assignment {
	tb.Helper()
	res := s.Score(n, r)
	if res.Err != nil {
		tb.Fatalf("Score: %v", res.Err)
	}
	if err := n.Assume(r, res.Assignment); err != nil {
		tb.Fatalf("Assume: %v", err)
	}
	return res.Assignment
}

// use marks whole GPUs of st as used.
func use(st scoring.NodeState, gpus ...int) scoring.NodeState {
	for _, g := range gpus {
		st.GPUs[g].Used = true
	}
	return st
}
