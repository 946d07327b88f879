package replay

import (
	"math"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// candidate is a node a scenario pod fits, with the reference scorer's
// result (whose feasibility every policy shares).
type candidate struct {
	Node   int
	Result scoring.Result
}

// ScenarioPolicies are the policies a scenario replay runs: Tessera's (the
// same scorer as on the traces), then FGD, BestFit and Random restated for
// nodes with MIG slices, shares and links.
func ScenarioPolicies() []Policy { return []Policy{Tessera{}, FGD{}, BestFit{}, Random{}} }

// ParseScenarioPolicies turns a comma-separated list of names (any case;
// "all" or "" for every one) into scenario policies.
func ParseScenarioPolicies(list string) ([]Policy, error) {
	if list == "" {
		list = "all"
	}
	return parsePolicies(list, ScenarioPolicies(), ScenarioPolicies())
}

// scenarioScale turns a float score of a scenario policy into the integer
// the replay ranks by, keeping differences above 1e-9.
func scenarioScale(v float64) int64 { return int64(math.Round(v * 1e9)) }

// tesseraScenario is Tessera on a scenario: the reference scorer (with
// scoring.DefaultConfig, the configuration of the trace replay and the
// scheduler plugin, and a target that learns from every arriving pod) is
// Tessera's own.
type tesseraScenario struct{ run *Run }

func (s tesseraScenario) Score(p *Pod, n int) int64 {
	k, err := s.run.Scorer.Rank(s.run.Nodes[n], p.Request)
	if err != nil {
		return math.MinInt64
	}
	return k
}

func (s tesseraScenario) SharedGPU(p *Pod, n int) int { return s.Devices(p, n).GPUs[0] }

func (s tesseraScenario) Devices(p *Pod, n int) scoring.Assignment {
	return s.run.Scorer.Score(s.run.Nodes[n], p.Request).Assignment
}

// fgdScenario is fragmentation only: the node whose expected fragmentation
// against the learned target workload drops the most (the generalised
// measure Tessera uses, without its CPU-stranded, hole, scarcity and
// hardware terms), as in "Beware of Fragmentation" (ATC '23). Like FGD it
// does not know interconnects: whole GPUs and MIG slices are the
// lowest-index free ones; share units go where the scorer puts them.
type fgdScenario struct{ run *Run }

func (s fgdScenario) Score(p *Pod, n int) int64 {
	return scenarioScale(s.run.Scorer.Score(s.run.Nodes[n], p.Request).FragmentationDrop)
}

func (s fgdScenario) SharedGPU(p *Pod, n int) int { return s.Devices(p, n).GPUs[0] }

func (s fgdScenario) Devices(p *Pod, n int) scoring.Assignment {
	return naive(s.run.Nodes[n], p.Request, s.run.Scorer.Score(s.run.Nodes[n], p.Request).Assignment)
}

// bestFitScenario is BestFit restated: the node with the least CPU and GPU
// capacity left after placement, each normalised by the largest node
// (weights ½ and ½); lowest-index devices.
type bestFitScenario struct{ fgdScenario }

func (s bestFitScenario) Score(p *Pod, n int) int64 {
	nd := s.run.Nodes[n]
	r := p.Request
	_, free := nd.Capacity()
	left := free - demandOn(nd, r, s.run.Scorer.Score(nd, r).Assignment)
	return scenarioScale(1 - 0.5*float64(nd.State().CPUFree-r.Demand.CPU)/float64(s.run.MaxCPU) - 0.5*left/s.run.MaxGPU)
}

// randomScenario takes a uniformly drawn candidate; lowest-index whole GPUs
// and MIG slices, a uniformly drawn GPU with room for share units.
type randomScenario struct {
	randomScorer
	run *Run
}

func (s *randomScenario) Devices(p *Pod, n int) scoring.Assignment {
	nd := s.run.Nodes[n]
	r := p.Request
	if r.Kind() == scoring.KindShare {
		var fit []int
		for g, gp := range nd.State().GPUs {
			if gp.Mode == scoring.ModeShared && gp.Healthy && gp.ShareFree >= r.Demand.ShareUnits && allows(r, gp.Product) {
				fit = append(fit, g)
			}
		}
		return scoring.Assignment{GPUs: []int{fit[s.run.Rand.Intn(len(fit))]}}
	}
	return naive(nd, r, s.run.Scorer.Score(nd, r).Assignment)
}

func allows(r *scoring.Request, product string) bool {
	return len(r.Demand.Allowed) == 0 || slices.Contains(r.Demand.Allowed, product)
}

// naive is the device choice of a scheduler that does not look at
// interconnects or MIG geometry: the lowest-index free whole GPUs, the
// first free slice of the profile on the lowest-index GPU; share units as
// the scorer chose.
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
