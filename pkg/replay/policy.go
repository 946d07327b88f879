package replay

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Policy is a placement policy, for trace replays and scenario replays
// alike. It builds a fresh Scorer for each replay, so a scorer may keep
// per-run caches.
type Policy interface {
	// Name is the policy's display name (as in the anchor file, e.g. "FGD").
	Name() string
	NewScorer(run *Run) Scorer
}

// Run is what a scorer may read during one replay. Scorers must treat it as
// read-only. A trace replay sets State, Trace, Target, Rank and Other; a
// scenario replay sets Nodes, Scorer, MaxCPU and MaxGPU; both set Rand.
type Run struct {
	State  *State
	Trace  *Trace
	Target *TargetWorkload
	// Rand is the replay's single random stream; only policies whose
	// protocol draws from it (Random) may use it.
	Rand *rand.Rand
	// Rank is each node's tie-break rank: among equal scores the smallest
	// rank wins.
	Rank []int
	// Step is the index, in the arrival order, of the pod being placed (a
	// pod the tuning drew twice arrives twice, as two steps).
	Step int
	// Other is a different trace of the same experiment, for policies that
	// learn from another workload (Tessera with PriorOther); nil when there
	// is none.
	Other *Trace
	// Nodes are a scenario's nodes, Scorer the reference scorer (Tessera's,
	// learning from every arriving pod) whose feasibility every policy
	// shares; MaxCPU and MaxGPU are the largest node's milli-CPU and GPU
	// capacity.
	Nodes  []*scoring.NodeCache
	Scorer *scoring.Scorer
	MaxCPU int64
	MaxGPU float64
}

// Scorer scores feasible nodes for one pod at a time and picks the GPU of a
// shared pod on the chosen node.
type Scorer interface {
	// Score is the integer score (higher is better, normally 0..100) of
	// putting p on node n, which is feasible. It is only called when at least
	// two nodes are feasible.
	Score(p *Pod, n int) int64
	// SharedGPU returns the index of the GPU of node n that the shared pod p
	// (K = 1, 0 < G < 1000) goes to; it has at least G free.
	SharedGPU(p *Pod, n int) int
}

// PreScorer is implemented by scorers that look at the whole feasible set
// before Score is called for each of its nodes.
type PreScorer interface {
	PreScore(p *Pod, feasible []int)
}

// Normalizer is implemented by scorers that rescale the scores of the
// feasible nodes after scoring (scores[i] belongs to feasible[i]).
type Normalizer interface {
	Normalize(p *Pod, feasible []int, scores []int64)
}

// Observer is implemented by scorers that keep per-node caches: Committed is
// called after p was placed on node n (on the given GPUs).
type Observer interface {
	Committed(p *Pod, n int, gpus []int)
}

// Devicer is implemented by scorers of scenario replays, whose nodes have
// MIG slices, shares and links: the devices pod p gets on node n.
type Devicer interface {
	Devices(p *Pod, n int) scoring.Assignment
}

// Memoizable is implemented by scorers whose Score depends only on the
// node's state and the pod's Class; the replay then caches scores per
// (node version, class).
type Memoizable interface {
	Memoizable() bool
}

// Baselines returns the six policies of the FGD protocol, in the protocol's
// order.
func Baselines() []Policy {
	return []Policy{Random{}, DotProd{}, GpuClustering{}, GpuPacking{}, BestFit{}, FGD{}}
}

// Policies returns every policy ParsePolicies knows: the baselines, then
// Tessera with the protocol's prior (the trace's distribution, as FGD
// gets), learning only from arriving pods, and with another trace's prior.
func Policies() []Policy {
	return append(Baselines(), Tessera{}, Tessera{Prior: PriorNone}, Tessera{Prior: PriorOther})
}

// PolicyNames lists the names ParsePolicies accepts.
func PolicyNames() []string {
	var names []string
	for _, p := range Policies() {
		names = append(names, strings.ToLower(p.Name()))
	}
	return names
}

// policyNames lists the policies' names, lower case, comma-separated.
func policyNames(ps []Policy) string {
	var names []string
	for _, p := range ps {
		names = append(names, strings.ToLower(p.Name()))
	}
	return strings.Join(names, ", ")
}

// ParsePolicies turns a comma-separated list of policy names (any case, or
// "all" for the six baselines) into trace policies, keeping the order given
// and dropping repeats.
func ParsePolicies(list string) ([]Policy, error) {
	return parsePolicies(list, Policies(), Baselines())
}

// parsePolicies parses list against the known policies; "all" stands for
// all.
func parsePolicies(list string, known, all []Policy) ([]Policy, error) {
	byName := map[string]Policy{}
	for _, p := range known {
		byName[strings.ToLower(p.Name())] = p
	}
	var out []Policy
	seen := map[string]bool{}
	add := func(p Policy) {
		if !seen[p.Name()] {
			seen[p.Name()] = true
			out = append(out, p)
		}
	}
	for tok := range strings.SplitSeq(list, ",") {
		tok = strings.ToLower(strings.TrimSpace(tok))
		switch p, ok := byName[tok]; {
		case tok == "":
		case tok == "all":
			for _, p := range all {
				add(p)
			}
		case !ok:
			return nil, fmt.Errorf("unknown policy %q: allowed values are %s or all", tok, policyNames(known))
		default:
			add(p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no policy given: allowed values are %s or all", policyNames(known))
	}
	return out, nil
}

// Random scores one uniformly drawn feasible node 100 and the others 0, and
// puts a shared pod on a uniformly drawn GPU that fits (reservoir sampling in
// index order).
type Random struct{}

func (Random) Name() string { return "Random" }

func (Random) NewScorer(run *Run) Scorer {
	if run.State == nil {
		return &randomScenario{randomScorer: randomScorer{r: run.Rand, chosen: -1}, run: run}
	}
	return &randomScorer{r: run.Rand, st: run.State, chosen: -1}
}

type randomScorer struct {
	r      *rand.Rand
	st     *State
	chosen int
}

func (s *randomScorer) PreScore(_ *Pod, feasible []int) { s.chosen = feasible[s.r.Intn(len(feasible))] }

func (s *randomScorer) Score(_ *Pod, n int) int64 {
	if n == s.chosen {
		return 100
	}
	return 0
}

func (s *randomScorer) SharedGPU(p *Pod, n int) int {
	gpu, c := -1, 0
	for i, f := range s.st.Nodes[n].GPUFree {
		if f >= p.G {
			c++
			if s.r.Intn(c) == 0 {
				gpu = i
			}
		}
	}
	return gpu
}

// Normalising constants of the protocol's scores: the largest node's CPU and
// GPU capacity.
const (
	maxSpecCPU = 128000
	maxSpecGPU = 8000
)

// bestShare is the "best" GPU selection shared by most baselines.
type bestShare struct{ st *State }

func (b bestShare) SharedGPU(p *Pod, n int) int { return BestShareGPU(&b.st.Nodes[n], p.G) }

// DotProd (Tetris) scores 100·(1 − d/2), d being the dot product of the
// node's free (CPU, GPU) vector and the pod's request, both normalised by the
// largest node.
type DotProd struct{}

func (DotProd) Name() string { return "DotProd" }

func (DotProd) NewScorer(run *Run) Scorer { return &dotProdScorer{bestShare{run.State}} }

type dotProdScorer struct{ bestShare }

func (*dotProdScorer) Memoizable() bool { return true }

func (s *dotProdScorer) Score(p *Pod, n int) int64 {
	return dotProdScore(&s.st.Nodes[n], p)
}

func dotProdScore(ns *NodeState, p *Pod) int64 {
	if ns.CPUFree < p.CPU {
		return 0
	}
	// float64(...) around each product keeps the compiler from fusing
	// multiply and add, so truncation sees the same values as the protocol's
	// step-by-step arithmetic.
	var d float64
	d += float64(float64(ns.CPUFree) / maxSpecCPU * (float64(p.CPU) / maxSpecCPU))
	d += float64(float64(ns.GPUFreeTotal) / maxSpecGPU * (float64(p.Demand()) / maxSpecGPU))
	d /= 2
	return int64(100 * (1 - d))
}

// GpuClustering prefers nodes that already hold GPU pods of the same kind
// ("share" or "<k>-gpu"), then fuller nodes.
type GpuClustering struct{}

func (GpuClustering) Name() string { return "GpuClustering" }

func (GpuClustering) NewScorer(run *Run) Scorer {
	return &clusteringScorer{bestShare: bestShare{run.State}, tags: make([]map[int]int, len(run.State.Nodes))}
}

type clusteringScorer struct {
	bestShare
	tags []map[int]int // per node: pod tag -> count of GPU pods
}

func (*clusteringScorer) Memoizable() bool { return true }

// clusterTag is 0 for a shared pod and K for a pod of K whole GPUs.
func clusterTag(p *Pod) int {
	if p.Shared() {
		return 0
	}
	return p.K
}

func (s *clusteringScorer) Score(p *Pod, n int) int64 {
	if p.G <= 0 {
		return 0
	}
	return clusteringScore(s.st.Nodes[n].GPUFreeTotal, s.tags[n], clusterTag(p))
}

func clusteringScore(free int64, tags map[int]int, tag int) int64 {
	base := 25 * (maxSpecGPU - free) / maxSpecGPU
	switch {
	case tags[tag] > 0 && len(tags) == 1:
		return base + 75
	case tags[tag] > 0:
		return base + 50
	case len(tags) == 0:
		return base + 25
	default:
		return base
	}
}

func (s *clusteringScorer) Committed(p *Pod, n int, _ []int) {
	if p.G <= 0 {
		return
	}
	if s.tags[n] == nil {
		s.tags[n] = map[int]int{}
	}
	s.tags[n][clusterTag(p)]++
}

// GpuPacking prefers, in order: shared GPUs already in use, free GPUs on a
// used node, free GPUs on an idle node.
type GpuPacking struct{}

func (GpuPacking) Name() string { return "GpuPacking" }

func (GpuPacking) NewScorer(run *Run) Scorer { return &packingScorer{bestShare: bestShare{run.State}} }

type packingScorer struct {
	bestShare
	idx []int
}

func (*packingScorer) Memoizable() bool { return true }

func (s *packingScorer) Score(p *Pod, n int) int64 {
	if p.G <= 0 {
		return 0
	}
	var score int64
	score, s.idx = packingScore(&s.st.Nodes[n], p, s.idx)
	return score
}

func packingScore(ns *NodeState, p *Pod, idx []int) (int64, []int) {
	g := len(ns.GPUFree)
	if ns.FullFree == g {
		return max(33-int64(g), int64(g)), idx
	}
	idx = idx[:0]
	for i := range ns.GPUFree {
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return ns.GPUFree[idx[a]] < ns.GPUFree[idx[b]] })
	need, fullUsed := p.K, 0
	var pct int64
	for _, i := range idx {
		if need == 0 {
			break
		}
		f := ns.GPUFree[i]
		if f >= p.G {
			need--
			pct += f * 100 / MilliPerGPU
			if f == MilliPerGPU {
				fullUsed++
			}
		}
	}
	if need != 0 {
		return 0, idx
	}
	if fullUsed > 0 {
		return max(50-int64(fullUsed), 33), idx
	}
	return max(100-pct/10, 50), idx
}

// BestFit prefers the node with the least CPU and GPU left after placement,
// min–max normalised over the feasible nodes.
type BestFit struct{}

func (BestFit) Name() string { return "BestFit" }

func (BestFit) NewScorer(run *Run) Scorer {
	if run.State == nil {
		return bestFitScenario{fgdScenario{run}}
	}
	return &bestFitScorer{bestShare{run.State}}
}

type bestFitScorer struct{ bestShare }

func (*bestFitScorer) Memoizable() bool { return true }

func (s *bestFitScorer) Score(p *Pod, n int) int64 { return bestFitScore(&s.st.Nodes[n], p) }

func bestFitScore(ns *NodeState, p *Pod) int64 {
	var score float64
	score += float64(float64(ns.CPUFree-p.CPU) / maxSpecCPU * 0.5)
	score += float64(float64(ns.GPUFreeTotal-p.Demand()) / maxSpecGPU * 0.5)
	return int64((1.0 - score) * 100)
}

func (*bestFitScorer) Normalize(_ *Pod, _ []int, scores []int64) { normalizeMinMax(scores) }

// normalizeMinMax rescales scores to 0..100 with integer arithmetic; all
// become 0 when they are equal.
func normalizeMinMax(scores []int64) {
	if len(scores) == 0 {
		return
	}
	lo, hi := scores[0], scores[0]
	for _, s := range scores {
		lo, hi = min(lo, s), max(hi, s)
	}
	for i, s := range scores {
		if hi == lo {
			scores[i] = 0
		} else {
			scores[i] = (s - lo) * 100 / (hi - lo)
		}
	}
}
