package replay

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// Experiment is a matrix of replays: every trace under every policy and seed.
type Experiment struct {
	Cluster  *Cluster
	Traces   []*Trace
	Policies []Policy
	Seeds    []int64
	Tune     float64
	// Parallel bounds the replays run at once; 0 means GOMAXPROCS.
	Parallel int
	// Progress, when set, is called after each replay with the number done
	// so far and the total; calls are serialised.
	Progress func(done, total int, r *Result)
}

// Runs is the number of replays in the matrix.
func (e *Experiment) Runs() int { return len(e.Traces) * len(e.Policies) * len(e.Seeds) }

// Run replays the whole matrix, seeds in parallel, and returns the results in
// trace, policy, seed order. The first failing replay cancels the others.
func (e *Experiment) Run(ctx context.Context) ([]*Result, error) {
	total := e.Runs()
	if total == 0 {
		return nil, errors.New("experiment has no runs: it needs at least one trace, policy and seed")
	}
	par := e.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	par = min(par, total)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	type job struct {
		i    int
		spec RunSpec
	}
	jobs := make(chan job)
	results := make([]*Result, total)
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				res, err := Replay(ctx, j.spec)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				results[j.i] = res
				done++
				if e.Progress != nil {
					e.Progress(done, total, res)
				}
				mu.Unlock()
			}
		}()
	}
	i := 0
feed:
	for ti, t := range e.Traces {
		var other *Trace
		if n := len(e.Traces); n > 1 {
			// Half-way round the list: a trace of another family where the
			// list is the openb set in name order.
			other = e.Traces[(ti+n/2)%n]
		}
		for _, p := range e.Policies {
			for _, s := range e.Seeds {
				select {
				case jobs <- job{i, RunSpec{Cluster: e.Cluster, Trace: t, Policy: p, Seed: s, Tune: e.Tune, Other: other}}:
				case <-ctx.Done():
					break feed
				}
				i++
			}
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return results, nil
}

// ParseSeeds parses a seed list such as "42-51" or "1,5,7-9".
func ParseSeeds(s string) ([]int64, error) {
	var out []int64
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(tok, "-")
		a, err := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seed %q: want an integer or a range like 42-51", tok)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(strings.TrimSpace(hi), 10, 64); err != nil {
				return nil, fmt.Errorf("seed range %q: want a range like 42-51", tok)
			}
		}
		if b < a {
			return nil, fmt.Errorf("seed range %q: the end is before the start", tok)
		}
		if b-a >= 100000 || len(out)+int(b-a) >= 100000 {
			return nil, fmt.Errorf("seed range %q: more than 100000 seeds", tok)
		}
		for v := a; v <= b; v++ {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no seed given: want a list such as 42-51 or 1,5,7-9")
	}
	return out, nil
}
