package replay

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"time"
)

// DefaultTune is the protocol's target demand: 130 % of the cluster's GPU
// capacity.
const DefaultTune = 1.3

// Event is the sample taken after each pod event (placed, failed or
// CPU-only alike): cumulative requested and currently allocated milli-GPU,
// and where the pod went.
type Event struct {
	Arrived int64
	Used    int64
	// Pod indexes Trace.Pods; Node indexes Cluster.Nodes, -1 when the pod
	// found no node; GPUs are the GPU indices it took on that node.
	Pod  int
	Node int
	GPUs []int
}

// RunSpec is one replay: a trace on a cluster under a policy and a seed.
type RunSpec struct {
	Cluster *Cluster
	Trace   *Trace
	Policy  Policy
	Seed    int64
	// Tune is the total GPU demand to tune the trace to, as a multiple of the
	// cluster's GPU capacity (DefaultTune); 0 or less replays it as it is.
	Tune float64
	// KeepEvents keeps the per-pod samples in the result.
	KeepEvents bool
	// Other is another trace, for policies that learn from it (Run.Other).
	Other *Trace
}

// Result is the outcome of one replay.
type Result struct {
	Trace  string
	Policy string
	Seed   int64
	// Pods is the number of pod arrivals after tuning; Added and Removed
	// count the pods tuning appended or removed.
	Pods, Added, Removed int
	Placed, Failed       int
	// Arrived and Used are the final requested and allocated milli-GPU.
	Arrived, Used int64
	Curve         Curve
	Events        []Event
	// Rank is each node's tie-break rank (Run.Rank), kept with the events.
	Rank []int
	Wall time.Duration
}

// Stream returns the replay's random stream for seed, with the protocol's
// first draw (one Int, discarded) already taken.
func Stream(seed int64) *rand.Rand {
	r := rand.New(rand.NewSource(seed))
	_ = r.Int()
	return r
}

// Arrivals returns the arrival order (indices into t.Pods, which are sorted
// by name) as the protocol draws it from r: a Fisher–Yates shuffle, then
// tuning to tune × capacity milli-GPU. Tuning up draws pods with replacement
// from the name-sorted list and appends them unshuffled, stopping at the first
// pod whose per-GPU request G would cross the target; tuning down removes
// uniformly drawn pods from the shuffled list until the demand is at most the
// target. added and removed count the tuned pods.
func Arrivals(r *rand.Rand, t *Trace, capacity int64, tune float64) (order []int, added, removed int) {
	n := len(t.Pods)
	order = make([]int, n)
	for i := range order {
		order[i] = i
	}
	r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	if tune <= 0 || n == 0 {
		return order, 0, 0
	}
	target := tune * float64(capacity)
	s := t.TotalDemand()
	switch {
	case float64(s) < target:
		if !hasGPUPod(t) {
			return order, 0, 0 // nothing could ever stop the loop
		}
		for {
			i := r.Intn(n)
			p := &t.Pods[i]
			if float64(s+p.G) > target {
				break
			}
			order = append(order, i)
			s += p.Demand()
			added++
		}
	case float64(s) > target:
		for float64(s) > target && len(order) > 0 {
			i := r.Intn(len(order))
			s -= t.Pods[order[i]].Demand()
			order = append(order[:i], order[i+1:]...)
			removed++
		}
	}
	return order, added, removed
}

func hasGPUPod(t *Trace) bool {
	for i := range t.Pods {
		if t.Pods[i].G > 0 {
			return true
		}
	}
	return false
}

// Replay runs one trace under one policy and seed, as the protocol does.
func Replay(ctx context.Context, spec RunSpec) (*Result, error) {
	if spec.Cluster == nil || spec.Trace == nil || spec.Policy == nil {
		return nil, errors.New("replay needs a cluster, a trace and a policy")
	}
	start := time.Now()
	c, t := spec.Cluster, spec.Trace
	r := Stream(spec.Seed)
	order, added, removed := Arrivals(r, t, c.TotalGPUMilli(), spec.Tune)
	rank := r.Perm(len(c.Nodes))

	st := NewState(c)
	run := &Run{State: st, Trace: t, Target: t.Target, Rand: r, Rank: rank, Other: spec.Other}
	sc := spec.Policy.NewScorer(run)
	pre, _ := sc.(PreScorer)
	norm, _ := sc.(Normalizer)
	obs, _ := sc.(Observer)
	var memoScore []int64
	var memoVer []uint32
	if m, ok := sc.(Memoizable); ok && m.Memoizable() {
		memoScore = make([]int64, len(c.Nodes)*t.Classes)
		memoVer = make([]uint32, len(c.Nodes)*t.Classes)
	}

	res := &Result{Trace: t.Name, Policy: spec.Policy.Name(), Seed: spec.Seed,
		Pods: len(order), Added: added, Removed: removed}
	events := make([]Event, 0, len(order))
	feasible := make([]int, 0, len(c.Nodes))
	scores := make([]int64, 0, len(c.Nodes))
	var gpus []int
	var arrived int64
	for step, pi := range order {
		if step%512 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("replaying %s under %s, seed %d: %w", t.Name, res.Policy, spec.Seed, err)
			}
		}
		p := &t.Pods[pi]
		run.Step = step
		arrived += p.Demand()
		feasible = feasible[:0]
		for n := range st.Nodes {
			if st.Fits(p, n) {
				feasible = append(feasible, n)
			}
		}
		chosen := -1
		switch len(feasible) {
		case 0:
			// The scheduler's no-op preemption dry run draws its start
			// offset among the nodes that rejected the pod as resolvable
			// (all of them here).
			if len(c.Nodes) > 0 {
				_ = r.Int31n(int32(len(c.Nodes)))
			}
		case 1:
			chosen = feasible[0]
		default:
			if pre != nil {
				pre.PreScore(p, feasible)
			}
			scores = scores[:0]
			for _, n := range feasible {
				var s int64
				if memoVer != nil {
					k := n*t.Classes + p.Class
					if memoVer[k] == st.Nodes[n].Version {
						s = memoScore[k]
					} else {
						s = sc.Score(p, n)
						memoScore[k], memoVer[k] = s, st.Nodes[n].Version
					}
				} else {
					s = sc.Score(p, n)
				}
				scores = append(scores, s)
			}
			if norm != nil {
				norm.Normalize(p, feasible, scores)
			}
			best := 0
			for i := 1; i < len(feasible); i++ {
				if scores[i] > scores[best] || (scores[i] == scores[best] && rank[feasible[i]] < rank[feasible[best]]) {
					best = i
				}
			}
			chosen = feasible[best]
		}
		if chosen < 0 {
			res.Failed++
		} else {
			gpus = gpus[:0]
			ns := &st.Nodes[chosen]
			switch {
			case p.G <= 0:
			case p.Shared():
				g := sc.SharedGPU(p, chosen)
				if g < 0 || g >= len(ns.GPUFree) || ns.GPUFree[g] < p.G {
					return nil, fmt.Errorf("policy %s picked gpu %d of node %s, which cannot hold pod %s (%d milli)",
						res.Policy, g, c.Nodes[chosen].Name, p.Name, p.G)
				}
				gpus = append(gpus, g)
			default:
				gpus = pickGPUs(gpus, ns, p)
			}
			st.Commit(p, chosen, gpus)
			if obs != nil {
				obs.Committed(p, chosen, gpus)
			}
			res.Placed++
		}
		ev := Event{Arrived: arrived, Used: st.UsedMilli, Pod: pi, Node: chosen}
		if spec.KeepEvents && len(gpus) > 0 && chosen >= 0 {
			ev.GPUs = append([]int(nil), gpus...)
		}
		events = append(events, ev)
	}
	if e, ok := sc.(interface{ Err() error }); ok {
		if err := e.Err(); err != nil {
			return nil, fmt.Errorf("replaying %s under %s, seed %d: %w", t.Name, res.Policy, spec.Seed, err)
		}
	}
	res.Arrived, res.Used = arrived, st.UsedMilli
	res.Curve = Discretize(events, c.TotalGPUs())
	if spec.KeepEvents {
		res.Events, res.Rank = events, rank
	}
	res.Wall = time.Since(start)
	return res, nil
}
