package replay

import (
	"math"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Tessera scores a placement by the drop in the node's expected GPU
// fragmentation (pkg/scoring) against a target workload learned online: an
// exponentially decayed histogram of the pods that arrived, seeded with the
// trace's shape distribution. The fragmentation is FGD's plus two terms:
// the GPU milli that the node's free CPU cannot feed at the target's
// CPU/GPU ratio (CPU-stranded GPUs), and the expected residue of each GPU's
// free milli once the target's pods have filled it (scoring.HoleResidue:
// how well the share sizes pair up). The primary key is the drop, in units
// of Resolution milli, less the cost of taking a GPU model that the target's
// model-constrained pods need while it is scarce (scoring.Scarcity); a small
// best-fit term breaks its ties, then the node rank.
type Tessera struct {
	// Weights of the packing terms; nil uses DefaultTesseraWeights.
	Weights *scoring.Weights
	// Decay, Prior, Epoch and Coverage override the learning constants
	// when > 0.
	Decay, Prior, Coverage float64
	Epoch                  int
	// Resolution is the unit, in milli-GPU, of the drop in fragmentation
	// that ranks nodes (drops in the same unit tie and go to the packing
	// terms); 0 uses 1.
	Resolution float64
	// CPUWeight weighs GPU milli that the node's CPU cannot feed at the
	// target workload's CPU/GPU ratio as extra fragmentation; 0 uses 0.3,
	// < 0 turns the term off.
	CPUWeight float64
	// HoleWeight weighs the expected residue of the GPUs' free milli
	// (scoring.HoleResidue) as extra fragmentation; 0 uses 0.3, < 0 turns
	// the term off.
	HoleWeight float64
	// ScarcityWeight weighs the cost of taking a GPU model that the
	// target's model-constrained pods need (scoring.Scarcity); 0 uses 0.25,
	// < 0 turns the term off. It is 0 on traces without gpu_spec.
	ScarcityWeight float64
}

// DefaultTesseraWeights are the packing weights of the tessera policy.
var DefaultTesseraWeights = scoring.Weights{BestFit: 0.001}

const (
	tesseraDecay    = 0.999 // per arrival: a half-life of ~700 pods
	tesseraPrior    = 1000  // weight, in pods, of the trace's distribution
	tesseraEpoch    = 128   // arrivals between refreshes of the target
	tesseraCoverage = 0.95
	// tesseraCPUWeight weighs CPU-stranded GPU milli like fragmentation.
	tesseraCPUWeight = 0.3
	// tesseraHoleWeight weighs the expected residue of free GPU milli.
	tesseraHoleWeight = 0.3
	// tesseraScarcityWeight weighs the model-scarcity cost.
	tesseraScarcityWeight = 0.25
)

// weightOr returns def for 0, 0 for a negative w, else w.
func weightOr(w, def float64) float64 {
	switch {
	case w == 0:
		return def
	case w < 0:
		return 0
	}
	return w
}

func (Tessera) Name() string { return "Tessera" }

func (t Tessera) NewScorer(run *Run) Scorer {
	w := DefaultTesseraWeights
	if t.Weights != nil {
		w = *t.Weights
	}
	decay, prior, epoch, res := tesseraDecay, float64(tesseraPrior), tesseraEpoch, t.Resolution
	if res <= 0 {
		res = 1
	}
	coverage := tesseraCoverage
	if t.Coverage > 0 {
		coverage = t.Coverage
	}
	if t.Decay > 0 {
		decay = t.Decay
	}
	if t.Prior > 0 {
		prior = t.Prior
	}
	if t.Epoch > 0 {
		epoch = t.Epoch
	}
	n := len(run.State.Nodes)
	s := &tesseraScorer{
		every:   epoch,
		cpuW:    weightOr(t.CPUWeight, tesseraCPUWeight),
		holeW:   weightOr(t.HoleWeight, tesseraHoleWeight),
		res:     res,
		st:      run.State,
		w:       w,
		wl:      scoring.NewWorkload(decay, coverage),
		classes: run.Trace.Classes,
		before:  make([]float64, n),
		bVer:    make([]uint32, n),
		bEpoch:  make([]int, n),
		memo:    make([]int64, n*run.Trace.Classes),
		mVer:    make([]uint32, n*run.Trace.Classes),
		mEpoch:  make([]int, n*run.Trace.Classes),
		epoch:   1,
		scarceW: weightOr(t.ScarcityWeight, tesseraScarcityWeight),
	}
	if s.scarceW != 0 {
		s.modelFree = make([]float64, len(run.State.Cluster.Models))
		for i := range run.State.Nodes {
			f := float64(run.State.Nodes[i].GPUFreeTotal)
			s.modelFree[run.State.Cluster.Nodes[i].ModelID] += f
			s.clusterFree += f
		}
	}
	if tw := run.Target; tw != nil {
		for _, sh := range tw.Shapes {
			s.wl.Observe(scoring.Shape{CPU: sh.CPU, K: sh.K, G: sh.G, Allowed: sh.Allowed}, sh.Spec, prior*sh.P)
		}
	}
	s.refresh()
	return s
}

type tesseraScorer struct {
	st      *State
	every   int
	cpuW    float64
	holeW   float64
	ratio   float64
	holes   *scoring.HoleResidue
	res     float64
	w       scoring.Weights
	wl      *scoring.Workload
	shapes  []scoring.Shape
	classes int
	seen    int
	last    *Pod
	epoch   int
	before  []float64
	bVer    []uint32
	bEpoch  []int
	memo    []int64
	mVer    []uint32
	mEpoch  []int
	free    []int64
	// scarceW weighs scoring.Scarcity; pressure is the target's per model,
	// modelFree and clusterFree the free milli-GPU per model and in all.
	scarceW     float64
	pressure    []float64
	modelFree   []float64
	clusterFree float64
}

var (
	_ Scorer    = (*tesseraScorer)(nil)
	_ PreScorer = (*tesseraScorer)(nil)
	_ Observer  = (*tesseraScorer)(nil)
)

func (s *tesseraScorer) observe(p *Pod) {
	if p == s.last {
		return
	}
	s.last = p
	s.wl.Observe(scoring.Shape{CPU: p.CPU, K: p.K, G: p.G, Allowed: p.Allowed}, p.Spec, 1)
	s.seen++
	if s.seen%s.every == 0 {
		s.refresh()
		s.epoch++
	}
}

// refresh takes the current target workload and what derives from it.
func (s *tesseraScorer) refresh() {
	s.shapes = s.wl.Shapes()
	s.ratio = scoring.GPUPerCPU(s.shapes)
	if s.scarceW != 0 {
		s.pressure = scoring.ModelPressure(s.shapes, len(s.st.Cluster.Models))
	}
	if s.holeW != 0 {
		s.holes = scoring.NewHoleResidue(s.shapes, len(s.st.Cluster.Models))
	}
}

// frag is the node's fragmentation without the CPU term (which the score
// adds as a difference).
func (s *tesseraScorer) frag(nd *scoring.Node) float64 {
	f := scoring.Fragmentation(nd, s.shapes)
	if s.holeW != 0 {
		f += s.holeW * s.holes.Of(nd)
	}
	return f
}

func (s *tesseraScorer) PreScore(p *Pod, _ []int) { s.observe(p) }

func (s *tesseraScorer) Committed(p *Pod, n int, _ []int) {
	if s.modelFree != nil && p.G > 0 {
		d := float64(p.Demand())
		s.modelFree[s.st.Cluster.Nodes[n].ModelID] -= d
		s.clusterFree -= d
	}
	s.observe(p)
}

// scarcity is the model-scarcity cost of p on node n in Score's units. It
// depends on the whole cluster's free capacity, so it is added outside the
// per-node memo.
func (s *tesseraScorer) scarcity(p *Pod, n int) int64 {
	if s.scarceW == 0 || p.G <= 0 {
		return 0
	}
	m := s.st.Cluster.Nodes[n].ModelID
	c := s.scarceW * float64(p.Demand()) * scoring.Scarcity(s.pressure[m], s.modelFree[m], s.clusterFree)
	return scoring.Quantize(c / s.res * 1e6)
}

func (s *tesseraScorer) node(n int, free []int64, cpu int64) scoring.Node {
	return scoring.Node{ModelID: s.st.Cluster.Nodes[n].ModelID, CPUFree: cpu, GPUFree: free}
}

func (s *tesseraScorer) fragBefore(n int) float64 {
	ns := &s.st.Nodes[n]
	if s.bVer[n] != ns.Version || s.bEpoch[n] != s.epoch {
		nd := s.node(n, ns.GPUFree, ns.CPUFree)
		s.before[n] = s.frag(&nd)
		s.bVer[n], s.bEpoch[n] = ns.Version, s.epoch
	}
	return s.before[n]
}

// scoreOn is the score of p on node n using the GPUs chosen by the usual
// rule, or GPU gpu for a shared pod.
func (s *tesseraScorer) scoreOn(p *Pod, n, gpu int) float64 {
	// The result is the drop in fragmentation in units of s.res, ×1e6, plus
	// the packing terms.
	ns := &s.st.Nodes[n]
	s.free = append(s.free[:0], ns.GPUFree...)
	switch {
	case p.G <= 0:
	case p.Shared():
		s.free[gpu] -= p.G
	default:
		taken := 0
		for i, f := range s.free {
			if taken == p.K {
				break
			}
			if (p.G == MilliPerGPU && f == MilliPerGPU) || (p.G < MilliPerGPU && f >= p.G) {
				s.free[i] -= p.G
				taken++
			}
		}
	}
	var total int64
	whole := 0
	for _, f := range s.free {
		total += f
		if f == MilliPerGPU {
			whole++
		}
	}
	nd := s.node(n, s.free, ns.CPUFree-p.CPU)
	after := s.frag(&nd)
	if s.cpuW != 0 {
		cur := s.node(n, ns.GPUFree, ns.CPUFree)
		after += s.cpuW * (scoring.CPUStranded(&nd, s.ratio) - scoring.CPUStranded(&cur, s.ratio))
	}
	before := s.fragBefore(n)
	delta := before - after
	return math.Floor(delta/s.res)*1e6 + (scoring.Score(before, after, total, whole, s.w) - delta)
}

func (s *tesseraScorer) best(p *Pod, n int) (float64, int) {
	ns := &s.st.Nodes[n]
	if !p.Shared() {
		return s.scoreOn(p, n, -1), -1
	}
	bestS, bestG := 0.0, -1
	for i, f := range ns.GPUFree {
		if f < p.G {
			continue
		}
		v := s.scoreOn(p, n, i)
		if bestG < 0 || v > bestS || (v == bestS && f < ns.GPUFree[bestG]) {
			bestS, bestG = v, i
		}
	}
	return bestS, bestG
}

func (s *tesseraScorer) Score(p *Pod, n int) int64 {
	k := n*s.classes + p.Class
	ns := &s.st.Nodes[n]
	if s.mVer[k] == ns.Version && s.mEpoch[k] == s.epoch {
		return s.memo[k] - s.scarcity(p, n)
	}
	v, _ := s.best(p, n)
	q := scoring.Quantize(v)
	s.memo[k], s.mVer[k], s.mEpoch[k] = q, ns.Version, s.epoch
	return q - s.scarcity(p, n)
}

func (s *tesseraScorer) SharedGPU(p *Pod, n int) int {
	_, g := s.best(p, n)
	return g
}
