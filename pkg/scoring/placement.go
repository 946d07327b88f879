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

// PlacementWeights weigh the hardware terms of a score. Each term is in
// [0, 1], 1 the best; Product, Interconnect and Keep cost their weight, in
// GPUs of fragmentation, times what the term falls short of 1 (see
// Result.Key); Packing breaks the ties that are left, when its weight is
// not 0.
type PlacementWeights struct {
	// Product: the cost-aware product score (ProductConfig.ProductScore).
	// Where the products the pod may use differ in price, the GPUs that the
	// placement strands by CPU (the CPU-stranded capacity it adds, see
	// Config.CPUStranded) are priced with the GPUs it takes: the pod pays
	// for its GPUs at price × (capacity taken + capacity stranded) /
	// capacity taken, so a cheap product stops being the cheap choice when
	// taking it leaves the node's other GPUs without CPU (and a placement
	// that feeds GPUs stranded before pays less). Result.HardwareCost
	// holds the difference.
	Product float64 `json:"product"`
	// Interconnect: for two or more whole GPUs, how well the set the node
	// can give is connected (InterconnectScore); 1 for other pods.
	Interconnect float64 `json:"interconnect"`
	// Keep: for whole GPUs, the share of look-ahead set sizes whose best
	// interconnect the node still offers after the placement (an NVLink
	// island is not broken when the node has a set that does not break
	// one); 1 for other pods and on nodes without a link matrix.
	Keep float64 `json:"keep"`
	// Packing: the share of the node's GPU capacity in use after placement.
	Packing float64 `json:"packing"`
}

// Config configures a Scorer.
type Config struct {
	Weights  PlacementWeights `json:"weights"`
	Products ProductConfig    `json:"products"`
	// SharePolicy breaks ties between GPUs for share units whose drop in
	// fragmentation is the same (topology.PickShareGPU).
	SharePolicy topology.SharePolicy `json:"sharePolicy"`
	// Lookahead are the whole-GPU set sizes whose best interconnect the
	// topology score tries to keep available (default 8, 4, 2).
	Lookahead []int `json:"lookahead"`
	// TargetDecay is the per-pod decay of the learned target workload, in
	// (0, 1]; TargetEpoch is how many observed pods pass between refreshes
	// of the target (which invalidate cached scores; before the first
	// epoch it is also refreshed after 1, 2, 4, ... pods); the target holds
	// the heaviest shapes covering TargetCoverage of the weight, at most
	// TargetShapes of them (a bound on the work, not a tuning knob: the
	// openb traces need up to 102 shapes for 95 %, and a cap that cuts
	// them drops the rare product-constrained shapes the scarcity cost
	// is for).
	TargetDecay    float64 `json:"targetDecay"`
	TargetEpoch    int     `json:"targetEpoch"`
	TargetShapes   int     `json:"targetShapes"`
	TargetCoverage float64 `json:"targetCoverage"`
	// Resolution is the unit, in GPUs, of the drop in fragmentation that
	// ranks nodes in the second tier: drops in the same unit tie and go to
	// the last tier.
	Resolution float64 `json:"resolution"`
	// CPUStranded weighs, as extra fragmentation, the free GPU capacity
	// that the node's free CPU cannot feed at the target workload's
	// GPU-per-CPU ratio (0 turns it off).
	CPUStranded float64 `json:"cpuStranded"`
	// HoleResidue weighs, as extra fragmentation, the expected residue of
	// the shared GPUs' free units once the target's pods have filled them,
	// a GPU counting only the pods that the cluster's tighter holes leave
	// it (0 turns it off).
	HoleResidue float64 `json:"holeResidue"`
	// Scarcity weighs the cost, per GPU taken, of a product that the
	// target's product-constrained pods need while its free capacity is
	// scarce (0 turns it off).
	Scarcity float64 `json:"scarcity"`
	// ShapeScarcity weighs the cost of the pods of the learned workload's
	// multi-GPU shapes that a placement leaves the node unable to host (by
	// its free whole GPUs and CPU), each at the shape's GPUs per arriving
	// pod times how much scarcer than free capacity in general the
	// capacity that can still host the shape is (0 turns it off; see
	// shapes.go).
	ShapeScarcity float64 `json:"shapeScarcity"`
	// Saturation, when positive, bounds the value of the drop less the
	// scarcity cost (x, in GPUs) before the hardware costs are taken off:
	// c·x/(c+|x|), which is x for small x and tends to ±c, so that a large
	// drop does not outweigh the hardware. It keeps the order of the drops.
	Saturation float64 `json:"saturation"`
}

// DefaultConfig returns the default configuration: the one the scheduler
// plugin, the trace replay and the scenarios use (docs/benchmarks.md).
func DefaultConfig() Config {
	return Config{
		Weights:        PlacementWeights{Product: 2, Interconnect: 4, Keep: 0.6, Packing: 1},
		Products:       DefaultProductConfig(),
		SharePolicy:    topology.SharePacked,
		Lookahead:      []int{8, 4, 2},
		TargetDecay:    0.999,
		TargetEpoch:    128,
		TargetShapes:   1024,
		TargetCoverage: 0.95,
		Resolution:     0.001,
		CPUStranded:    0.3,
		HoleResidue:    0.3,
		Scarcity:       0.25,
		ShapeScarcity:  0.25,
		Saturation:     5,
	}
}

// nonNegative reports whether v is a non-negative finite number.
func nonNegative(v float64) bool { return v >= 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// Validate checks the configuration; errors name the field and value.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	w := field.NewPath("weights")
	for _, t := range []struct {
		name string
		v    float64
	}{{"product", c.Weights.Product}, {"interconnect", c.Weights.Interconnect}, {"keep", c.Weights.Keep}, {"packing", c.Weights.Packing}} {
		if !nonNegative(t.v) {
			errs = append(errs, field.Invalid(w.Child(t.name), t.v, "must be a non-negative finite number"))
		}
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
	if c.TargetShapes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("targetShapes"), c.TargetShapes, "must be at least 1"))
	}
	if c.TargetCoverage <= 0 || c.TargetCoverage > 1 || math.IsNaN(c.TargetCoverage) {
		errs = append(errs, field.Invalid(field.NewPath("targetCoverage"), c.TargetCoverage, "must be in (0, 1]"))
	}
	if !(c.Resolution > 0) || math.IsInf(c.Resolution, 0) {
		errs = append(errs, field.Invalid(field.NewPath("resolution"), c.Resolution, "must be a positive number of gpus"))
	}
	for _, t := range []struct {
		name string
		v    float64
	}{{"cpuStranded", c.CPUStranded}, {"holeResidue", c.HoleResidue}, {"scarcity", c.Scarcity}, {"shapeScarcity", c.ShapeScarcity}, {"saturation", c.Saturation}} {
		if !nonNegative(t.v) {
			errs = append(errs, field.Invalid(field.NewPath(t.name), t.v, "must be a non-negative finite number"))
		}
	}
	return errs
}

// Scorer scores placements of pods on nodes. It interns product and MIG
// profile names, holds the target workload learned from observed pods and
// the cluster's free capacity per product, and is the factory of the cached
// Nodes it scores. It is not safe for concurrent use: callers serialise
// (the scheduler's cycle does).
type Scorer struct {
	cfg        Config
	products   map[string]int // product -> id
	cost       []float64      // by product id
	profiles   map[string]int // mig profile -> id
	sets       map[string]int // allowed/preferred list -> id
	reqIDs     map[reqKey]int32
	present    []int // nodes' GPUs per product id
	presentGen uint64
	target     *demandWorkload
	// lastArrival is the id of the pod ObserveArrival last observed.
	lastArrival string
	shapes      []targetShape
	ratio       float64 // target GPUs per milli-CPU
	epoch       uint64
	seen        int
	// productFree is the free healthy GPU capacity per product id, in
	// GPUs, and clusterFree its sum; pressure is, per product id, the GPUs
	// per pod that the target's product-constrained shapes ask of it.
	productFree []float64
	clusterFree float64
	pressure    []float64
	// holes caches the hole-residue tables of the current epoch.
	holes map[holeKey]*holeTable
	// census counts the cluster's holes by kind and free units as of the
	// first hole table of the epoch; gpusPerPod is the target's GPUs per
	// arriving pod.
	census     map[holeKey]holeCount
	gpusPerPod float64
	// nodes are the scorer's nodes (NewNode, RemoveNode), each at its
	// NodeCache.reg; hostShapes are the learned workload's multi-GPU
	// shapes, with their probabilities on the target's scale, and
	// hostFree, per host shape, the GPUs of the pods of it the cluster's
	// nodes can host (ShapeScarcity).
	nodes      []*NodeCache
	hostShapes []targetShape
	hostFree   []float64
	// classes interns the machine classes of nodes whose scores are shared,
	// shared indexes sharedScores, the shared memo of epoch sharedEpoch
	// (shared.go).
	classes      map[string]int32
	shared       map[sharedKey]int32
	sharedScores []sharedScore
	sharedEpoch  uint64
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
		reqIDs:     map[reqKey]int32{},
		target:     newDemandWorkload(cfg.TargetDecay),
		epoch:      1,
		presentGen: 1,
		holes:      map[holeKey]*holeTable{},
		census:     map[holeKey]holeCount{},
		classes:    map[string]int32{},
		shared:     map[sharedKey]int32{},
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
		s.present = append(s.present, 0)
		s.productFree = append(s.productFree, 0)
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
	// shares: units over UnitsPerGPU, 4 when unknown) for the target's
	// ratio and the product pressure.
	gpus float64
	key  reqKey
	// id numbers key within the scorer (the score caches' key).
	id int32
	// shape identifies the request as a shape of the target workload: the
	// key without memory, which the target does not tell apart.
	shape reqKey
}

// reqKey identifies requests that score the same on every node.
type reqKey struct {
	kind               Kind
	n, profile, units  int
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
	units := d.UnitsPerGPU
	if units == 0 {
		units = 4
	}
	switch r.kind {
	case KindWhole:
		r.gpus = float64(d.GPUs)
	case KindMIG:
		r.gpus = migGPUs(d.MIGProfile)
	case KindShare:
		r.gpus = float64(d.ShareUnits) / float64(units)
	}
	r.key = reqKey{kind: r.kind, n: n, profile: r.profile, units: d.UnitsPerGPU, allowed: s.setID(d.Allowed), preferred: s.setID(d.Preferred), cpu: d.CPU, mem: d.Memory}
	r.shape = r.key
	r.shape.mem = 0
	id, ok := s.reqIDs[r.key]
	if !ok {
		id = int32(len(s.reqIDs))
		s.reqIDs[r.key] = id
	}
	r.id = id
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
	// Key ranks the nodes for one request: the higher, the better. It
	// orders by Drop in units of Config.Resolution, rounded down, less
	// HardwareCost and ScarcityCost in the same units (to 1/1000 of a
	// unit); then, among equal values, by Packing. It is not negative;
	// only its order means anything.
	Key int64
	// Product, Interconnect, Keep and Packing are the terms, in [0, 1].
	Product, Interconnect, Keep, Packing float64
	// HardwareCost is the weighted shortfall of Product, Interconnect and
	// Keep, in GPUs of fragmentation (PlacementWeights), plus the price of
	// the GPUs the placement strands by CPU where prices differ
	// (PlacementWeights.Product).
	HardwareCost float64
	// FragmentationDrop is the drop of the node's expected fragmentation
	// (FGD's measure generalised to MIG slices and shares, in GPUs) alone;
	// Drop adds the drops of the weighted CPU-stranded capacity and hole
	// residue to it.
	FragmentationDrop, Drop float64
	// ScarcityCost is the weighted cost, in GPUs of fragmentation, of the
	// product the pod takes (Config.Scarcity) and of the multi-GPU target
	// shapes' pods the node can no longer host (Config.ShapeScarcity); it
	// depends on the whole cluster's free capacity.
	ScarcityCost float64
	// Quality is the interconnect of a whole-GPU set.
	Quality    topology.Quality
	Assignment Assignment
	// capacity is the GPU capacity the assignment takes, in GPUs; product
	// the product id of its GPUs (-1 for a CPU-only pod).
	capacity float64
	product  int
	drop     float64 // Drop in units of Resolution, rounded down
	tie      float64 // Packing, or 0 when its weight is 0
	// losses are the host shapes' pods the placement loses (shapes.go).
	losses []shapeLoss
}

// Feasible reports whether Err is nil.
func (r *Result) Feasible() bool { return r.Err == nil }

// Observe adds a pod to the learned target workload. Every TargetEpoch
// observations (and after 1, 2, 4, ... before the first TargetEpoch) the
// target is refreshed and cached scores are recomputed.
func (s *Scorer) Observe(r *Request) {
	s.target.observe(r)
	s.seen++
	if s.refreshesAt(s.seen) {
		s.refresh()
	}
}

// refreshesAt reports whether the n-th observation refreshes the target.
func (s *Scorer) refreshesAt(n int) bool {
	return n%s.cfg.TargetEpoch == 0 || len(s.shapes) == 0 || (n < s.cfg.TargetEpoch && n&(n-1) == 0)
}

// NextObservationRefreshes reports whether the next observation refreshes
// the target workload, which changes the scores of every node: a ranking
// made before it is stale after it.
func (s *Scorer) NextObservationRefreshes() bool { return s.refreshesAt(s.seen + 1) }

// ObserveArrival is how the scheduler plugin and the trace replay learn:
// it adds the pod of r, identified by id (a pod UID, an arrival number),
// to the target workload unless it is the pod the last call was for. Both
// call it at the same two points of a pod's scheduling cycle — when they
// first score the pod (PreScore, before any Score) and when they place it
// (Reserve) — so that a pod is learned before it is scored whenever it is
// scored at all (kube-scheduler scores only when two or more nodes are
// feasible, and a pod of an opportunistic batch is not scored), and once.
// An empty id is always observed.
func (s *Scorer) ObserveArrival(id string, r *Request) {
	if id != "" && id == s.lastArrival {
		return
	}
	s.lastArrival = id
	s.Observe(r)
}

// refresh recomputes the target shapes and what derives from them.
func (s *Scorer) refresh() {
	var cum float64
	s.shapes, cum = s.target.shapes(s.cfg.TargetShapes, s.cfg.TargetCoverage, s.shapes[:0])
	var g, c float64
	for _, sh := range s.shapes {
		g += sh.p * sh.r.gpus
		c += sh.p * float64(sh.r.Demand.CPU)
	}
	s.ratio, s.gpusPerPod = 0, g
	if c > 0 {
		s.ratio = g / c
	}
	s.refreshPressure()
	s.refreshHostShapes(cum)
	clear(s.holes)
	s.epoch++
}

// refreshPressure computes, per product, the GPUs per arriving pod that
// the target's product-constrained shapes ask of it: each such shape adds
// p·gpus, split evenly over the allowed products present. Shapes that may
// use any product add nothing: they can go elsewhere.
func (s *Scorer) refreshPressure() {
	s.pressure = slices.Grow(s.pressure[:0], len(s.cost))[:len(s.cost)]
	clear(s.pressure)
	for _, sh := range s.shapes {
		r := sh.r
		if r.kind == KindNone || r.allowed == nil {
			continue
		}
		n := 0
		for _, id := range r.allowed {
			if s.present[id] > 0 {
				n++
			}
		}
		for _, id := range r.allowed {
			if s.present[id] > 0 {
				s.pressure[id] += sh.p * r.gpus / float64(n)
			}
		}
	}
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
		if !nonNegative(weights[i]) {
			return fmt.Errorf("target request %d has weight %v, want a non-negative number", i, weights[i])
		}
		s.target.add(r, weights[i])
	}
	s.refresh()
	return nil
}

// Score scores r on n: feasibility, the device set the pod gets and the
// key that ranks it. Results are cached per node until the node changes
// (Assume, Forget) or the target workload is refreshed; only the scarcity
// cost, which depends on the whole cluster, is recomputed. The returned
// Assignment must not be modified.
func (s *Scorer) Score(n *NodeCache, r *Request) Result {
	e, cached := s.cached(n, r)
	res := *cached
	if res.Err == nil {
		res.ScarcityCost = s.scarcity(r, int(e.product), e.capacity) + s.shapeScarcity(res.losses)
		res.Key = s.key(res.drop, res.ScarcityCost, res.HardwareCost, res.tie)
	}
	return res
}

// Rank is Score's Key alone, or its Err: the cheap call for ranking many
// nodes. It reads the node's memo entry and, unless the score is computed
// afresh, nothing else of the node.
func (s *Scorer) Rank(n *NodeCache, r *Request) (int64, error) {
	e, res := s.cached(n, r)
	if !e.feasible {
		return 0, res.Err
	}
	lossCost := 0.0
	if e.nloss == lossesInResult {
		lossCost = s.shapeScarcity(res.losses)
	} else {
		for _, l := range e.losses[:e.nloss] {
			lossCost += s.lossCost(int(l.j), int(l.lost))
		}
		lossCost *= s.cfg.ShapeScarcity
	}
	return s.key(e.drop, s.scarcity(r, int(e.product), e.capacity)+lossCost, e.cost, e.tie), nil
}

// Cached returns the node's cached Result of r when it is current (what
// Score returns, less the scarcity cost and the key, which depend on the
// whole cluster), or the shared memo's for the node's class and state in
// this epoch (shared.go), and false when Score would compute it. It changes
// nothing: calls may run concurrently with each other, not with the
// Scorer's or the node's other methods. (pkg/scheduler's Filter asks it
// under a read lock for every node it filters, and takes the write lock
// when it says false: after a target refresh, for every node of a pod's
// search until the shared memo answers for identical nodes.)
func (s *Scorer) Cached(n *NodeCache, r *Request) (Result, bool) {
	if res, ok := s.ownCached(n, r); ok {
		return res, true
	}
	k, share := n.sharedKeyOf(r)
	if !share {
		return Result{}, false
	}
	ss, ok := s.sharedGet(k)
	if !ok {
		return Result{}, false
	}
	res := ss.res
	res.losses = nil // the shared entry's: not the caller's to hold
	return res, true
}

// ownCached is the node's own memo of r when it is current.
func (s *Scorer) ownCached(n *NodeCache, r *Request) (Result, bool) {
	var (
		e   memoEntry
		res *Result
	)
	if r.id < denseMemo {
		if int(r.id) >= len(n.memo) {
			return Result{}, false
		}
		e, res = n.memo[r.id], &n.memoRes[r.id]
	} else {
		got, ok := n.memoMore.get(r.id)
		if !ok {
			return Result{}, false
		}
		e, res = got.memoEntry, &got.res
	}
	if !e.set || e.version != n.version || e.epoch != s.epoch {
		return Result{}, false
	}
	return *res, true
}

// Prefetch reads the node's memo entry of r, which Rank reads first, and
// returns a word of it (callers keep it, so that the read stays): a caller
// about to rank many cold nodes reads ahead with it, many nodes at once
// (pkg/scheduler's cluster.entries).
func (n *NodeCache) Prefetch(r *Request) uint64 {
	if r.id < denseMemo && int(r.id) < len(n.memo) {
		return n.memo[r.id].version
	}
	return 0
}

// denseMemo is how many request ids a node caches in a slice (the others go
// to a map of at most maxMemoEntries).
const (
	denseMemo      = 256
	maxMemoEntries = 512
)

// cached returns the node's cached score of r, computing it when stale:
// the part Rank reads and the Result.
func (s *Scorer) cached(n *NodeCache, r *Request) (*memoEntry, *Result) {
	if r.id >= denseMemo {
		got, _ := n.memoMore.get(r.id)
		if !got.set || got.version != n.version || got.epoch != s.epoch {
			s.rescore(n, r, &got.memoEntry, &got.res)
			n.memoMore.put(r.id, got, maxMemoEntries)
		}
		return &got.memoEntry, &got.res
	}
	if int(r.id) >= len(n.memo) {
		grow := int(r.id) + 1 - len(n.memo)
		n.memo = append(n.memo, make([]memoEntry, grow)...)
		n.memoRes = append(n.memoRes, make([]Result, grow)...)
	}
	e, res := &n.memo[r.id], &n.memoRes[r.id]
	if !e.set || e.version != n.version || e.epoch != s.epoch {
		s.rescore(n, r, e, res)
	}
	return e, res
}

// rescore brings the node's stale memo of r, e and res, up to date: from
// the shared memo (shared.go) when a node of the same class and state was
// scored for r in this epoch, else afresh.
func (s *Scorer) rescore(n *NodeCache, r *Request, e *memoEntry, res *Result) {
	k, share := n.sharedKeyOf(r)
	if share {
		if ss, ok := s.sharedGet(k); ok {
			n.copyShared(ss, e, res)
			return
		}
	}
	*res = s.score(n, r, res.losses[:0])
	e.fill(res, n.version, s.epoch)
	if share && res.Err == nil {
		s.sharedPut(k, e, res)
	}
}

// scarcity is the cost of taking capacity GPUs of product id for r: the
// product's pressure divided by its share of the cluster's free capacity,
// per GPU, weighed by Config.Scarcity. It grows as the product's GPUs run
// out while pods that can only use them keep arriving, so pods that may go
// elsewhere leave them to those pods. It applies only where the products r
// may use cost the same (ProductConfig): where prices tell them apart, the
// product term chooses (a cheap product that constrained pods also need is
// still the right one for a pod that may use it). A product with no free
// capacity costs nothing (nothing can be placed on it).
func (s *Scorer) scarcity(r *Request, id int, capacity float64) float64 {
	if s.cfg.Scarcity == 0 || id < 0 || id >= len(s.pressure) || capacity == 0 {
		return 0
	}
	if s.costRange(r); r.lo < r.hi {
		return 0
	}
	p, free := s.pressure[id], s.productFree[id]
	if p <= 0 || free <= 0 || s.clusterFree <= 0 {
		return 0
	}
	return s.cfg.Scarcity * capacity * p * s.clusterFree / free
}

// key composes Result.Key from the drop (in resolution units, rounded
// down), the scarcity and hardware costs (in GPUs) and the tie-break:
// the net value Saturate(drop·Resolution − scarcity) − hardware, in GPUs
// quantised to 1e-9 and clamped to ±2^42 of them, in the high 43 bits, the
// tie-break (in [0, 1], quantised to 2^-20) in the low 20.
func (s *Scorer) key(drop, scarcity, hardware, tie float64) int64 {
	const cBits = 20
	x := drop*s.cfg.Resolution - scarcity
	if c := s.cfg.Saturation; c > 0 {
		x = c * x / (c + math.Abs(x))
	}
	b := int64(math.Round(min(max((x-hardware)*1e9, -(1<<42)), 1<<42-1))) + 1<<42
	t := int64(math.Round(min(max(tie, 0), 1) * (1<<cBits - 1)))
	return b<<cBits | t
}

// Feasible returns nil when r fits n, else an error wrapping ErrInfeasible.
func (s *Scorer) Feasible(n *NodeCache, r *Request) error {
	res := s.Score(n, r)
	return res.Err
}

// score scores r on n afresh; losses is the buffer for Result.losses.
func (s *Scorer) score(n *NodeCache, r *Request, losses []shapeLoss) Result {
	st := &n.st
	d := &r.Demand
	if st.CPUFree < d.CPU {
		return Result{Err: fmt.Errorf("node %q has %d milli-cpu free, the pod asks for %d: %w", st.Name, st.CPUFree, d.CPU, ErrInfeasible)}
	}
	if st.MemFree < d.Memory {
		return Result{Err: fmt.Errorf("node %q has %d MiB memory free, the pod asks for %d: %w", st.Name, st.MemFree, d.Memory, ErrInfeasible)}
	}
	res := Result{Interconnect: 1, Keep: 1, Product: 1, product: -1}
	m := n.measureBefore(s)
	var err error
	switch r.kind {
	case KindWhole:
		err = s.scoreWhole(n, r, &res)
	case KindMIG:
		err = s.scoreMIG(n, r, &res)
	case KindShare:
		err = s.scoreShare(n, r, &res, m)
	}
	if err != nil {
		return Result{Err: err}
	}
	price := 0.0 // the mean price of the pod's GPUs
	if len(res.Assignment.GPUs) > 0 {
		sum := 0.0
		for _, g := range res.Assignment.GPUs {
			sum += s.productScore(n.prod[g], r)
			price += s.cost[n.prod[g]]
		}
		res.Product = sum / float64(len(res.Assignment.GPUs))
		price /= float64(len(res.Assignment.GPUs))
		res.product = n.prod[res.Assignment.GPUs[0]]
	}
	res.capacity = n.demandCapacity(r, &res.Assignment)
	dl := delta{cpu: d.CPU, kind: r.kind, a: &res.Assignment, units: d.ShareUnits, capacity: res.capacity}
	after := n.measure(s, &dl)
	res.FragmentationDrop = m.frag - after.frag
	res.Drop = m.total(s) - after.total(s)
	res.drop = math.Floor(res.Drop/s.cfg.Resolution + 1e-6)
	res.losses = s.hostLosses(n, &dl, losses)
	if n.capacity > 0 {
		res.Packing = 1 - (n.free-res.capacity)/n.capacity
	}
	w := s.cfg.Weights
	res.HardwareCost = w.Product*(1-res.Product) + w.Interconnect*(1-res.Interconnect) + w.Keep*(1-res.Keep) +
		w.Product*s.strandedPrice(r, price, res.capacity, after.cpu-m.cpu)
	if w.Packing > 0 {
		res.tie = res.Packing
	}
	return res
}

// strandedPrice is what pricing the GPUs a placement strands by CPU takes
// off r's product score: the placement takes capacity GPUs at price each
// and changes the node's CPU-stranded capacity by stranded GPUs (negative
// when it feeds GPUs stranded before), so its GPUs cost price ×
// (capacity + stranded) / capacity, which lowers the product score
// (hi − price) / (hi − lo) by price × stranded / (capacity × (hi − lo)).
// It is 0 where the products r may use cost the same: there is no price to
// compare, and the CPU-stranded term of the drop alone weighs stranding.
// The stranded capacity is the node's (Config.CPUStranded's measure),
// priced at the pod's GPUs' price; capacity + stranded is never negative,
// as a placement cannot feed more stranded capacity than it takes.
func (s *Scorer) strandedPrice(r *Request, price, capacity, stranded float64) float64 {
	if capacity <= 0 || stranded == 0 {
		return 0
	}
	if s.costRange(r); !(r.hi > r.lo) {
		return 0
	}
	return price * stranded / (capacity * (r.hi - r.lo))
}

// costRange brings r.lo and r.hi, the cheapest and dearest products r
// allows among those present, up to date.
func (s *Scorer) costRange(r *Request) {
	if r.costGen != s.presentGen {
		r.lo, r.hi = math.Inf(1), math.Inf(-1)
		for id, n := range s.present {
			if n > 0 && r.allows(id) {
				r.lo, r.hi = min(r.lo, s.cost[id]), max(r.hi, s.cost[id])
			}
		}
		r.costGen = s.presentGen
	}
}

func (s *Scorer) productScore(product int, r *Request) float64 {
	if !r.allows(product) {
		return 0
	}
	if slices.Contains(r.preferred, product) {
		return 1
	}
	s.costRange(r)
	v := costScore(s.cost[product], r.lo, r.hi)
	if len(r.preferred) > 0 {
		v /= 2
	}
	return v
}

// wholeFree appends the positions of the GPUs that can go whole now
// (GPU.wholeFree) that r may use (all products when r is nil).
func (n *NodeCache) wholeFree(dst []int, r *Request) []int {
	for i := range n.st.GPUs {
		if g := &n.st.GPUs[i]; g.wholeFree() && (r == nil || r.allows(n.prod[i])) {
			dst = append(dst, i)
		}
	}
	return dst
}

// wholeFree reports whether the GPU can go whole now: healthy, and a free
// whole GPU or a shared one with ShareWhole and every unit free.
func (g *GPU) wholeFree() bool {
	return g.Healthy && !g.Used && (g.Mode == ModeWhole || g.Mode == ModeShared && g.ShareWhole && g.ShareFree == g.ShareTotal)
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
// none was available before, and on a node without a link matrix: there
// is no interconnect to keep, and which set sizes stay possible is the
// fragmentation's business). known, when not nil, is the best quality of a
// set of len(set) GPUs among them.
func (n *NodeCache) keepScore(s *Scorer, set []int, known *topology.Quality) float64 {
	if !n.linked {
		return 1
	}
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

func (s *Scorer) scoreShare(n *NodeCache, r *Request, res *Result, before measures) error {
	units := r.Demand.ShareUnits
	n.shareGPUs = n.shareGPUs[:0]
	n.dropBuf = n.dropBuf[:0]
	best, found := math.Inf(-1), false
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		n.shareGPUs = append(n.shareGPUs, topology.ShareGPU{})
		n.dropBuf = append(n.dropBuf, math.Inf(-1))
		if g.Mode != ModeShared || !g.Healthy || g.ShareFree < units || !r.allows(n.prod[i]) {
			continue
		}
		// A GPU like an earlier candidate (free units, size, product, whole
		// use) leads to the same node state but for the position, hence to
		// the same drop.
		v := math.Inf(-1)
		for j := range i {
			if o := &n.st.GPUs[j]; !math.IsInf(n.dropBuf[j], -1) && o.ShareFree == g.ShareFree && o.ShareTotal == g.ShareTotal &&
				o.ShareWhole == g.ShareWhole && n.prod[j] == n.prod[i] {
				v = n.dropBuf[j]
				break
			}
		}
		if math.IsInf(v, -1) {
			n.one[0] = i
			dl := delta{cpu: r.Demand.CPU, kind: KindShare, a: &Assignment{GPUs: n.one[:]}, units: units,
				capacity: float64(units) / float64(g.ShareTotal)}
			v = math.Floor((before.total(s)-n.measure(s, &dl).total(s))/s.cfg.Resolution + 1e-6)
		}
		n.dropBuf[i] = v
		best, found = max(best, v), true
	}
	if !found {
		// No GPU fits: the share picker says why.
		for i := range n.st.GPUs {
			if g := &n.st.GPUs[i]; g.Mode == ModeShared && r.allows(n.prod[i]) {
				n.shareGPUs[i] = topology.ShareGPU{Free: g.ShareFree, Total: g.ShareTotal, Healthy: g.Healthy}
			}
		}
	} else {
		// Among the GPUs of the best drop, the share policy chooses.
		for i, v := range n.dropBuf {
			if v == best {
				g := &n.st.GPUs[i]
				n.shareGPUs[i] = topology.ShareGPU{Free: g.ShareFree, Total: g.ShareTotal, Healthy: true}
			}
		}
	}
	g, err := topology.PickShareGPU(n.shareGPUs, units, s.cfg.SharePolicy)
	if err != nil {
		if errors.Is(err, topology.ErrInsufficient) {
			return fmt.Errorf("node %q: %w: %w", n.st.Name, ErrInfeasible, err)
		}
		return fmt.Errorf("node %q: %w", n.st.Name, err)
	}
	res.Assignment = Assignment{GPUs: []int{g}}
	return nil
}
