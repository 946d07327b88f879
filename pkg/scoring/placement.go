package scoring

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// ErrInfeasible means a pod does not fit a node; the wrapping error says why.
var ErrInfeasible = errors.New("pod does not fit the node")

// PlacementWeights weigh the terms of Scorer.Score. Each term is in [0, 1];
// the score is their weighted mean, times 100. The topology score is two
// terms, Interconnect and Keep, weighed apart.
type PlacementWeights struct {
	// Product: the cost-aware product score (ProductConfig.ProductScore).
	Product float64 `json:"product"`
	// Interconnect: for two or more whole GPUs, how well the set the node
	// can give is connected (InterconnectScore); 1 for other pods.
	Interconnect float64 `json:"interconnect"`
	// Keep: for whole GPUs, the share of look-ahead set sizes whose best
	// interconnect the node still offers after the placement (an NVLink
	// island is not broken when the node has a set that does not break
	// one); 1 for other pods.
	Keep float64 `json:"keep"`
	// Fragmentation: the drop of the node's expected fragmentation against
	// the target workload (through a logistic curve; 0.5 is no change).
	Fragmentation float64 `json:"fragmentation"`
	// Packing: the share of the node's GPU capacity in use after placement.
	Packing float64 `json:"packing"`
}

// Config configures a Scorer.
type Config struct {
	Weights  PlacementWeights `json:"weights"`
	Products ProductConfig    `json:"products"`
	// SharePolicy chooses the GPU of a share request (topology.PickShareGPU).
	SharePolicy topology.SharePolicy `json:"sharePolicy"`
	// Lookahead are the whole-GPU set sizes whose best interconnect the
	// topology score tries to keep available (default 8, 4, 2).
	Lookahead []int `json:"lookahead"`
	// TargetDecay is the per-pod decay of the learned target workload, in
	// (0, 1]; TargetEpoch is how many observed pods pass between refreshes
	// of the target (which invalidate cached scores); TargetShapes caps the
	// number of shapes in it.
	TargetDecay  float64 `json:"targetDecay"`
	TargetEpoch  int     `json:"targetEpoch"`
	TargetShapes int     `json:"targetShapes"`
	// CPUStranded weighs, as extra fragmentation, the free GPU capacity
	// that the node's free CPU cannot feed at the target workload's
	// GPU-per-CPU ratio (0 turns it off).
	CPUStranded float64 `json:"cpuStranded"`
}

// DefaultConfig returns the default weights and the default product
// classes. The weights were chosen on the "mixed" scenario of pkg/scenario
// (docs/benchmarks.md, "Scenarios beyond the trace"): an all-NVLink set
// for multi-GPU pods first, the drop in fragmentation (CPU-stranded GPUs
// counted twice) and the product's cost next, keeping NVLink islands and
// packing as tie-breakers.
func DefaultConfig() Config {
	return Config{
		Weights:      PlacementWeights{Product: 5, Interconnect: 10, Keep: 1.5, Fragmentation: 10, Packing: 1},
		Products:     DefaultProductConfig(),
		SharePolicy:  topology.SharePacked,
		Lookahead:    []int{8, 4, 2},
		TargetDecay:  0.995,
		TargetEpoch:  32,
		TargetShapes: 16,
		CPUStranded:  2,
	}
}

// Validate checks the configuration; errors name the field and value.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	w := field.NewPath("weights")
	sum := 0.0
	for _, t := range []struct {
		name string
		v    float64
	}{{"product", c.Weights.Product}, {"interconnect", c.Weights.Interconnect}, {"keep", c.Weights.Keep}, {"fragmentation", c.Weights.Fragmentation}, {"packing", c.Weights.Packing}} {
		if t.v < 0 || math.IsNaN(t.v) || math.IsInf(t.v, 0) {
			errs = append(errs, field.Invalid(w.Child(t.name), t.v, "must be a non-negative finite number"))
		}
		sum += t.v
	}
	if sum <= 0 && len(errs) == 0 {
		errs = append(errs, field.Invalid(w, c.Weights, "at least one weight must be positive"))
	}
	errs = append(errs, c.Products.Validate(field.NewPath("products"))...)
	if _, err := topology.ParseSharePolicy(string(c.SharePolicy)); err != nil {
		errs = append(errs, field.NotSupported(field.NewPath("sharePolicy"), c.SharePolicy, []topology.SharePolicy{topology.SharePacked, topology.ShareDistributed}))
	}
	for i, m := range c.Lookahead {
		if m < 2 || m > topology.MaxDevices {
			errs = append(errs, field.Invalid(field.NewPath("lookahead").Index(i), m, fmt.Sprintf("must be 2 to %d", topology.MaxDevices)))
		}
	}
	if c.TargetDecay <= 0 || c.TargetDecay > 1 || math.IsNaN(c.TargetDecay) {
		errs = append(errs, field.Invalid(field.NewPath("targetDecay"), c.TargetDecay, "must be in (0, 1]"))
	}
	if c.TargetEpoch < 1 {
		errs = append(errs, field.Invalid(field.NewPath("targetEpoch"), c.TargetEpoch, "must be at least 1"))
	}
	if c.CPUStranded < 0 || math.IsNaN(c.CPUStranded) || math.IsInf(c.CPUStranded, 0) {
		errs = append(errs, field.Invalid(field.NewPath("cpuStranded"), c.CPUStranded, "must be a non-negative finite number"))
	}
	if c.TargetShapes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("targetShapes"), c.TargetShapes, "must be at least 1"))
	}
	return errs
}

// Scorer scores placements of pods on nodes. It interns product and MIG
// profile names, holds the target workload learned from observed pods, and
// is the factory of the cached Nodes it scores. It is not safe for
// concurrent use: callers serialise (the scheduler's cycle does).
type Scorer struct {
	cfg        Config
	products   map[string]int // product -> id
	cost       []float64      // by product id
	profiles   map[string]int // mig profile -> id
	sets       map[string]int // allowed/preferred list -> id
	present    []int          // nodes' GPUs per product id
	presentGen uint64
	target     *demandWorkload
	shapes     []targetShape
	ratio      float64 // target GPUs per milli-CPU
	epoch      uint64
	seen       int
}

// NewScorer validates cfg and returns a scorer.
func NewScorer(cfg Config) (*Scorer, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid scoring config: %w", errs.ToAggregate())
	}
	cfg.Lookahead = slices.Clone(cfg.Lookahead)
	slices.SortFunc(cfg.Lookahead, func(a, b int) int { return b - a })
	cfg.Lookahead = slices.Compact(cfg.Lookahead)
	return &Scorer{
		cfg:        cfg,
		products:   map[string]int{},
		profiles:   map[string]int{},
		sets:       map[string]int{},
		target:     newDemandWorkload(cfg.TargetDecay),
		epoch:      1,
		presentGen: 1,
	}, nil
}

// Config returns the scorer's configuration.
func (s *Scorer) Config() Config { return s.cfg }

func (s *Scorer) productID(p string) int {
	id, ok := s.products[p]
	if !ok {
		id = len(s.cost)
		s.products[p] = id
		c, _ := s.cfg.Products.Cost(p)
		s.cost = append(s.cost, c)
	}
	return id
}

func (s *Scorer) profileID(p string) int {
	id, ok := s.profiles[p]
	if !ok {
		id = len(s.profiles)
		s.profiles[p] = id
	}
	return id
}

func (s *Scorer) setID(ps []string) int {
	if len(ps) == 0 {
		return 0
	}
	k := strings.Join(slices.Sorted(slices.Values(ps)), "\x00")
	id, ok := s.sets[k]
	if !ok {
		id = len(s.sets) + 1
		s.sets[k] = id
	}
	return id
}

// Request is a validated Demand prepared for scoring (Scorer.Compile).
type Request struct {
	Demand    Demand
	kind      Kind
	profile   int   // mig profile id; -1 when none
	allowed   []int // product ids; nil allows every product
	preferred []int
	// lo and hi are the cheapest and dearest allowed products present, as
	// of present generation costGen.
	lo, hi  float64
	costGen uint64
	// gpus is the request's GPU capacity (MIG: compute slices over 7;
	// shares: units over 4 when the GPU is unknown) for the target ratio.
	gpus float64
	key  reqKey
}

// reqKey identifies requests that score the same on every node.
type reqKey struct {
	kind               Kind
	n, profile         int
	allowed, preferred int
	cpu, mem           int64
}

// Compile validates d and prepares it for scoring.
func (s *Scorer) Compile(d Demand) (*Request, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	r := &Request{Demand: d, kind: d.Kind(), profile: -1}
	r.Demand.Allowed, r.Demand.Preferred = slices.Clone(d.Allowed), slices.Clone(d.Preferred)
	for _, p := range d.Allowed {
		r.allowed = append(r.allowed, s.productID(p))
	}
	for _, p := range d.Preferred {
		r.preferred = append(r.preferred, s.productID(p))
	}
	if r.kind == KindMIG {
		r.profile = s.profileID(d.MIGProfile)
	}
	n := d.GPUs + d.ShareUnits
	switch r.kind {
	case KindWhole:
		r.gpus = float64(d.GPUs)
	case KindMIG:
		r.gpus = migGPUs(d.MIGProfile)
	case KindShare:
		r.gpus = float64(d.ShareUnits) / 4
	}
	r.key = reqKey{kind: r.kind, n: n, profile: r.profile, allowed: s.setID(d.Allowed), preferred: s.setID(d.Preferred), cpu: d.CPU, mem: d.Memory}
	return r, nil
}

// migGPUs reads the compute slices of a MIG profile name ("3g.40gb": 3)
// over the 7 of a full GPU; 1/7 when the name does not say.
func migGPUs(profile string) float64 {
	p := strings.TrimPrefix(profile, "1c.")
	if i := strings.IndexByte(p, 'g'); i > 0 {
		if n, err := strconv.Atoi(p[:i]); err == nil && n > 0 {
			return float64(min(n, 7)) / 7
		}
	}
	return 1.0 / 7
}

// Kind returns what the request asks for.
func (r *Request) Kind() Kind { return r.kind }

func (r *Request) allows(product int) bool {
	return r.allowed == nil || slices.Contains(r.allowed, product)
}

// Assignment is the device set a pod gets on a node.
type Assignment struct {
	// GPUs are positions on the node: the k whole GPUs, ascending, or the one
	// GPU of a MIG slice or of share units. Empty for a CPU-only pod.
	GPUs []int
	// Slice is the MIG slice's index in the GPU's MIGSlices (MIG requests).
	Slice int
	// Placement is the MIG slice's placement (MIG requests).
	Placement gpu.Placement
}

// Result is the outcome of scoring one request on one node.
type Result struct {
	// Err is nil when the pod fits; otherwise it wraps ErrInfeasible and
	// says why, and the other fields are zero.
	Err error
	// Score is the weighted mean of the terms, times 100.
	Score                                               float64
	Product, Interconnect, Keep, Fragmentation, Packing float64
	// FragmentationDrop is the drop of the node's expected fragmentation
	// (FGD's measure generalised to MIG slices and shares, in GPUs) without
	// the CPU-stranded part; the Fragmentation term is σ of the drop with it.
	FragmentationDrop float64
	// Quality is the interconnect of a whole-GPU set.
	Quality    topology.Quality
	Assignment Assignment
}

// Feasible reports whether Err is nil.
func (r *Result) Feasible() bool { return r.Err == nil }

// Observe adds a pod to the learned target workload. Every TargetEpoch
// observations the target is refreshed and cached scores are recomputed.
func (s *Scorer) Observe(r *Request) {
	s.target.observe(r)
	s.seen++
	if s.seen%s.cfg.TargetEpoch == 0 || len(s.shapes) == 0 {
		s.refresh()
	}
}

// refresh recomputes the target shapes and their GPU-per-CPU ratio.
func (s *Scorer) refresh() {
	s.shapes = s.target.shapes(s.cfg.TargetShapes, s.shapes[:0])
	var g, c float64
	for _, sh := range s.shapes {
		g += sh.p * sh.r.gpus
		c += sh.p * float64(sh.r.Demand.CPU)
	}
	s.ratio = 0
	if c > 0 {
		s.ratio = g / c
	}
	s.epoch++
}

// SetTarget replaces the target workload with the given requests and
// weights (which need not sum to 1), as if each had been observed with that
// weight; it invalidates cached scores.
func (s *Scorer) SetTarget(reqs []*Request, weights []float64) error {
	if len(reqs) != len(weights) {
		return fmt.Errorf("target has %d requests and %d weights", len(reqs), len(weights))
	}
	s.target = newDemandWorkload(s.cfg.TargetDecay)
	for i, r := range reqs {
		if weights[i] < 0 || math.IsNaN(weights[i]) || math.IsInf(weights[i], 0) {
			return fmt.Errorf("target request %d has weight %v, want a non-negative number", i, weights[i])
		}
		s.target.add(r, weights[i])
	}
	s.refresh()
	return nil
}

// Score scores r on n: feasibility, the device set the pod gets and the
// weighted score. Results are cached per node until the node changes
// (Assume, Forget) or the target workload is refreshed; the returned
// Assignment must not be modified.
func (s *Scorer) Score(n *NodeCache, r *Request) Result {
	if e, ok := n.memo.get(r.key); ok && e.version == n.version && e.epoch == s.epoch {
		return e.res
	}
	res := s.score(n, r)
	n.memo.put(r.key, memoEntry{version: n.version, epoch: s.epoch, res: res}, 0)
	return res
}

// Feasible returns nil when r fits n, else an error wrapping ErrInfeasible.
func (s *Scorer) Feasible(n *NodeCache, r *Request) error {
	res := s.Score(n, r)
	return res.Err
}

func (s *Scorer) score(n *NodeCache, r *Request) Result {
	st := &n.st
	d := &r.Demand
	if st.CPUFree < d.CPU {
		return Result{Err: fmt.Errorf("node %q has %d milli-cpu free, the pod asks for %d: %w", st.Name, st.CPUFree, d.CPU, ErrInfeasible)}
	}
	if st.MemFree < d.Memory {
		return Result{Err: fmt.Errorf("node %q has %d MiB memory free, the pod asks for %d: %w", st.Name, st.MemFree, d.Memory, ErrInfeasible)}
	}
	res := Result{Interconnect: 1, Keep: 1, Product: 1}
	var err error
	switch r.kind {
	case KindWhole:
		err = s.scoreWhole(n, r, &res)
	case KindMIG:
		err = s.scoreMIG(n, r, &res)
	case KindShare:
		err = s.scoreShare(n, r, &res)
	}
	if err != nil {
		return Result{Err: err}
	}
	if len(res.Assignment.GPUs) > 0 {
		sum := 0.0
		for _, g := range res.Assignment.GPUs {
			sum += s.productScore(n.prod[g], r)
		}
		res.Product = sum / float64(len(res.Assignment.GPUs))
	}
	before := n.fragBefore(s)
	dl := delta{cpu: d.CPU, mem: d.Memory, kind: r.kind, a: &res.Assignment, units: d.ShareUnits}
	after := n.frag(s.shapes, &dl)
	res.FragmentationDrop = before - after
	if s.cfg.CPUStranded > 0 && s.ratio > 0 {
		before += s.cfg.CPUStranded * max(0, n.free-float64(n.st.CPUFree)*s.ratio)
		after += s.cfg.CPUStranded * max(0, n.free-n.demandCapacity(r, &res.Assignment)-float64(n.st.CPUFree-d.CPU)*s.ratio)
	}
	res.Fragmentation = 1 / (1 + math.Exp(-(before - after)))
	if n.capacity > 0 {
		res.Packing = 1 - (n.freeCapacity()-n.demandCapacity(r, &res.Assignment))/n.capacity
	}
	w := s.cfg.Weights
	res.Score = 100 * (w.Product*res.Product + w.Interconnect*res.Interconnect + w.Keep*res.Keep +
		w.Fragmentation*res.Fragmentation + w.Packing*res.Packing) /
		(w.Product + w.Interconnect + w.Keep + w.Fragmentation + w.Packing)
	return res
}

func (s *Scorer) productScore(product int, r *Request) float64 {
	if !r.allows(product) {
		return 0
	}
	if slices.Contains(r.preferred, product) {
		return 1
	}
	if r.costGen != s.presentGen {
		r.lo, r.hi = math.Inf(1), math.Inf(-1)
		for id, n := range s.present {
			if n > 0 && r.allows(id) {
				r.lo, r.hi = min(r.lo, s.cost[id]), max(r.hi, s.cost[id])
			}
		}
		r.costGen = s.presentGen
	}
	v := costScore(s.cost[product], r.lo, r.hi)
	if len(r.preferred) > 0 {
		v /= 2
	}
	return v
}

// wholeFree appends the positions of healthy, free whole GPUs that r may
// use (all products when r is nil).
func (n *NodeCache) wholeFree(dst []int, r *Request) []int {
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		if g.Mode == ModeWhole && g.Healthy && !g.Used && (r == nil || r.allows(n.prod[i])) {
			dst = append(dst, i)
		}
	}
	return dst
}

func (s *Scorer) scoreWhole(n *NodeCache, r *Request, res *Result) error {
	k := r.Demand.GPUs
	free := n.wholeFree(n.cand[:0], r)
	n.cand = free
	if len(free) < k {
		return fmt.Errorf("node %q has %d free healthy whole gpus of an allowed product, the pod asks for %d: %w", n.st.Name, len(free), k, ErrInfeasible)
	}
	// The set, its quality and the keep score depend only on the candidate
	// GPUs, all free whole GPUs and k: cached by those, they survive
	// changes of CPU, memory, MIG slices and shares.
	key := wholeKey{cand: bitmask(free), all: n.wholeMask(), k: k}
	e, ok := n.whole.get(key)
	if !ok {
		set, q, err := n.alloc.AllocateQuality(free, nil, k)
		if err != nil {
			return fmt.Errorf("node %q: allocating %d gpus: %w", n.st.Name, k, err)
		}
		var known *topology.Quality // the best k-set of all free whole GPUs
		if key.cand == key.all {
			known = &q
		}
		e = wholeEntry{set: set, q: q, keep: n.keepScore(s, set, known)}
		n.whole.put(key, e, maxWholeEntries)
	}
	res.Assignment.GPUs = e.set
	res.Quality = e.q
	res.Keep = e.keep
	if k >= 2 {
		res.Interconnect = InterconnectScore(e.q)
	}
	return nil
}

// maxWholeEntries bounds a node's cache of whole-GPU choices.
const maxWholeEntries = 64

type wholeKey struct {
	cand, all uint64
	k         int
}

type wholeEntry struct {
	set  []int
	q    topology.Quality
	keep float64
}

func bitmask(ps []int) uint64 {
	var m uint64
	for _, p := range ps {
		m |= 1 << p
	}
	return m
}

// InterconnectScore maps a set's quality to [0, 1]: sets whose every pair is
// NVLinked score 0.75 to 1 by their weakest pair's NVLink count (18, an
// NVSwitch H100/H200/B200, is 1); PCIe-only sets score by their worst path:
// PIX 0.6, PXB 0.5, PHB 0.4, NODE 0.3, SYS 0.1, unknown 0. A single GPU
// scores 1.
func InterconnectScore(q topology.Quality) float64 {
	if q.Size <= 1 {
		return 1
	}
	if q.MinNVLinks > 0 {
		return 0.75 + 0.25*min(1, float64(q.MinNVLinks)/18)
	}
	switch q.PCIe {
	case gpu.PathSame, gpu.PathSingleSwitch:
		return 0.6
	case gpu.PathMultiSwitch:
		return 0.5
	case gpu.PathHostBridge:
		return 0.4
	case gpu.PathSameCPU:
		return 0.3
	case gpu.PathCrossCPU:
		return 0.1
	}
	return 0
}

// keepScore is the share of look-ahead sizes whose best set quality, among
// the node's free whole GPUs, the placement of set leaves intact (1 when
// none was available before). known, when not nil, is the best quality of a
// set of len(set) GPUs among them.
func (n *NodeCache) keepScore(s *Scorer, set []int, known *topology.Quality) float64 {
	before := n.bestBefore(s, known)
	if len(before) == 0 {
		return 1
	}
	free := n.wholeFree(n.scratch[:0], nil)
	rest := free[:0]
	for _, g := range free {
		if !slices.Contains(set, g) {
			rest = append(rest, g)
		}
	}
	n.scratch = rest
	kept, avail := 0, 0
	for i, m := range s.cfg.Lookahead {
		if !before[i].ok {
			continue
		}
		avail++
		if len(rest) < m {
			continue
		}
		if ok, err := n.alloc.Offers(rest, m, before[i].q); err == nil && ok {
			kept++
		}
	}
	if avail == 0 {
		return 1
	}
	return float64(kept) / float64(avail)
}

func (s *Scorer) scoreMIG(n *NodeCache, r *Request, res *Result) error {
	// The choice depends only on the MIG GPUs' slices and health: cached
	// by their version, it survives changes of CPU, whole GPUs and shares.
	key := migKey{profile: r.profile, allowed: r.key.allowed}
	if e, ok := n.migMemo.get(key); ok && e.ver == n.migVer {
		res.Assignment = e.a
		return e.err
	}
	err := s.pickMIG(n, r, res)
	n.migMemo.put(key, migEntry{ver: n.migVer, a: res.Assignment, err: err}, maxWholeEntries)
	return err
}

type migKey struct{ profile, allowed int }

type migEntry struct {
	ver uint64
	a   Assignment
	err error
}

func (s *Scorer) pickMIG(n *NodeCache, r *Request, res *Result) error {
	n.migGPUs = n.migGPUs[:0]
	n.migIdx = n.migIdx[:0]
	// The GPUs' used and free placements, one after the other.
	pls := n.migPlacements[:0]
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		if g.Mode != ModeMIG || !g.Healthy || !r.allows(n.prod[i]) {
			continue
		}
		free := 0
		for j, sl := range g.MIGSlices {
			if !sl.Used && n.sliceProfile[i][j] == r.profile {
				free++
			}
		}
		if free == 0 {
			continue
		}
		start := len(pls)
		for _, sl := range g.MIGSlices {
			if sl.Used {
				pls = append(pls, sl.Placement)
			}
		}
		mid := len(pls)
		for j, sl := range g.MIGSlices {
			if !sl.Used && n.sliceProfile[i][j] == r.profile {
				pls = append(pls, sl.Placement)
			}
		}
		n.migGPUs = append(n.migGPUs, topology.MIGGPU{
			Profiles: g.MIGProfiles,
			Used:     pls[start:mid:mid],
			Free:     pls[mid:len(pls):len(pls)],
		})
		n.migIdx = append(n.migIdx, i)
	}
	n.migPlacements = pls
	if len(n.migGPUs) == 0 {
		return fmt.Errorf("node %q has no free mig slice %s on a healthy gpu of an allowed product: %w", n.st.Name, r.Demand.MIGProfile, ErrInfeasible)
	}
	at, pl, err := topology.PickMIGDevice(n.migGPUs)
	if err != nil {
		return fmt.Errorf("node %q: picking a %s slice: %w", n.st.Name, r.Demand.MIGProfile, err)
	}
	g := n.migIdx[at]
	slice := -1
	for j, sl := range n.st.GPUs[g].MIGSlices {
		if !sl.Used && sl.Placement == pl && n.sliceProfile[g][j] == r.profile {
			slice = j
		}
	}
	res.Assignment = Assignment{GPUs: []int{g}, Slice: slice, Placement: pl}
	return nil
}

func (s *Scorer) scoreShare(n *NodeCache, r *Request, res *Result) error {
	n.shareGPUs = n.shareGPUs[:0]
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		sg := topology.ShareGPU{}
		if g.Mode == ModeShared && r.allows(n.prod[i]) {
			sg = topology.ShareGPU{Free: g.ShareFree, Total: g.ShareTotal, Healthy: g.Healthy}
		}
		n.shareGPUs = append(n.shareGPUs, sg)
	}
	g, err := topology.PickShareGPU(n.shareGPUs, r.Demand.ShareUnits, s.cfg.SharePolicy)
	if err != nil {
		if errors.Is(err, topology.ErrInsufficient) {
			return fmt.Errorf("node %q: %w: %w", n.st.Name, ErrInfeasible, err)
		}
		return fmt.Errorf("node %q: %w", n.st.Name, err)
	}
	res.Assignment = Assignment{GPUs: []int{g}}
	return nil
}
