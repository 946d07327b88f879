package scenario

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Env is what a policy may read while it chooses: the cluster's cached
// nodes and the reference scorer (Tessera's, default configuration) whose
// results gave the candidates. Policies must not change it.
type Env struct {
	Nodes  []*scoring.NodeCache
	Scorer *scoring.Scorer
	// Rand is the run's policy stream; only Random draws from it.
	Rand *rand.Rand
	// MaxCPU and MaxGPU are the largest node's milli-CPU and GPU capacity.
	MaxCPU int64
	MaxGPU float64
}

// Candidate is a node the pod fits, with the reference scorer's result.
type Candidate struct {
	Node   int
	Result scoring.Result
}

// Policy chooses a candidate node and the devices the pod gets there.
type Policy interface {
	Name() string
	// Choose returns an index into cands and the assignment on that node.
	Choose(env *Env, r *scoring.Request, cands []Candidate) (int, scoring.Assignment)
}

// Policies returns every policy: Tessera's combined scoring, then the
// baselines.
func Policies() []Policy { return []Policy{Tessera{}, FGD{}, BestFit{}, Random{}} }

// ParsePolicies turns a comma-separated list of names (any case; "all" or
// "" for every policy) into policies.
func ParsePolicies(list string) ([]Policy, error) {
	if list == "" || list == "all" {
		return Policies(), nil
	}
	var out []Policy
	for tok := range strings.SplitSeq(list, ",") {
		tok = strings.ToLower(strings.TrimSpace(tok))
		i := slices.IndexFunc(Policies(), func(p Policy) bool { return strings.ToLower(p.Name()) == tok })
		if i < 0 {
			var names []string
			for _, p := range Policies() {
				names = append(names, strings.ToLower(p.Name()))
			}
			return nil, fmt.Errorf("unknown policy %q: allowed values are %s or all", tok, strings.Join(names, ", "))
		}
		if p := Policies()[i]; !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Tessera takes the candidate with the highest combined score (product,
// topology, fragmentation, packing) and the devices the scorer chose
// through pkg/topology's allocator; ties go to the lowest node.
type Tessera struct{}

func (Tessera) Name() string { return "Tessera" }

func (Tessera) Choose(_ *Env, _ *scoring.Request, cands []Candidate) (int, scoring.Assignment) {
	best := 0
	for i, c := range cands {
		if c.Result.Key > cands[best].Result.Key {
			best = i
		}
	}
	return best, cands[best].Result.Assignment
}

// FGD is fragmentation only: the node whose expected fragmentation against
// the learned target workload drops the most (the same generalised measure
// Tessera uses, without its CPU-stranded, product, topology and packing
// terms), as in
// "Beware of Fragmentation" (ATC '23). Like FGD it does not know
// interconnects: whole GPUs and MIG slices are the lowest-index free ones;
// share units go where fragmentation grows least (the scorer's choice).
type FGD struct{}

func (FGD) Name() string { return "FGD" }

func (FGD) Choose(env *Env, r *scoring.Request, cands []Candidate) (int, scoring.Assignment) {
	best := 0
	for i, c := range cands {
		if c.Result.FragmentationDrop > cands[best].Result.FragmentationDrop {
			best = i
		}
	}
	return best, naive(env.Nodes[cands[best].Node], r, cands[best].Result.Assignment)
}

// BestFit restates pkg/sim's BestFit: the node with the least CPU and GPU
// capacity left after placement, each normalised by the largest node
// (weights ½ and ½); lowest-index devices.
type BestFit struct{}

func (BestFit) Name() string { return "BestFit" }

func (BestFit) Choose(env *Env, r *scoring.Request, cands []Candidate) (int, scoring.Assignment) {
	best, bestScore := 0, 0.0
	for i, c := range cands {
		n := env.Nodes[c.Node]
		_, free := n.Capacity()
		left := free - demandOn(n, r, c.Result.Assignment)
		score := 1 - 0.5*float64(n.State().CPUFree-r.Demand.CPU)/float64(env.MaxCPU) - 0.5*left/env.MaxGPU
		if i == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best, naive(env.Nodes[cands[best].Node], r, cands[best].Result.Assignment)
}

// Random takes a uniformly drawn candidate; lowest-index whole GPUs and MIG
// slices, a uniformly drawn GPU with room for share units.
type Random struct{}

func (Random) Name() string { return "Random" }

func (Random) Choose(env *Env, r *scoring.Request, cands []Candidate) (int, scoring.Assignment) {
	i := env.Rand.IntN(len(cands))
	n := env.Nodes[cands[i].Node]
	if r.Kind() == scoring.KindShare {
		var fit []int
		for g, gp := range n.State().GPUs {
			if gp.Mode == scoring.ModeShared && gp.Healthy && gp.ShareFree >= r.Demand.ShareUnits && allows(r, gp.Product) {
				fit = append(fit, g)
			}
		}
		return i, scoring.Assignment{GPUs: []int{fit[env.Rand.IntN(len(fit))]}}
	}
	return i, naive(n, r, cands[i].Result.Assignment)
}

func allows(r *scoring.Request, product string) bool {
	return len(r.Demand.Allowed) == 0 || slices.Contains(r.Demand.Allowed, product)
}

// naive is the device choice of a scheduler that does not look at
// interconnects or MIG geometry: the lowest-index free whole GPUs, the
// first free slice of the profile on the lowest-index GPU; share units as
// the scorer chose (packed).
func naive(n *scoring.NodeCache, r *scoring.Request, scored scoring.Assignment) scoring.Assignment {
	st := n.State()
	switch r.Kind() {
	case scoring.KindWhole:
		var gpus []int
		for i, g := range st.GPUs {
			if len(gpus) < r.Demand.GPUs && g.Mode == scoring.ModeWhole && g.Healthy && !g.Used && allows(r, g.Product) {
				gpus = append(gpus, i)
			}
		}
		return scoring.Assignment{GPUs: gpus}
	case scoring.KindMIG:
		for i, g := range st.GPUs {
			if g.Mode != scoring.ModeMIG || !g.Healthy || !allows(r, g.Product) {
				continue
			}
			for j, sl := range g.MIGSlices {
				if !sl.Used && sl.Profile == r.Demand.MIGProfile {
					return scoring.Assignment{GPUs: []int{i}, Slice: j, Placement: sl.Placement}
				}
			}
		}
	}
	return scored
}

// demandOn is the GPU capacity (in GPUs) a takes on n for r.
func demandOn(n *scoring.NodeCache, r *scoring.Request, a scoring.Assignment) float64 {
	st := n.State()
	switch r.Kind() {
	case scoring.KindWhole:
		return float64(len(a.GPUs))
	case scoring.KindShare:
		return float64(r.Demand.ShareUnits) / float64(st.GPUs[a.GPUs[0]].ShareTotal)
	case scoring.KindMIG:
		return n.SliceFraction(a.GPUs[0], a.Slice)
	}
	return 0
}
