package scoring

import (
	"fmt"
	"math/bits"
	"slices"
	"sort"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// NodeCache is one node's GPU state with what scoring derives from it, kept
// incrementally: Assume and Forget change the state in place and invalidate
// the node's cached scores, so scoring a pod on an unchanged node is a
// look-up. Create nodes with Scorer.NewNode; a NodeCache belongs to its Scorer.
type NodeCache struct {
	// What Scorer.Rank reads comes first, in the first cache line: a
	// scheduler ranks hundreds of nodes a pod, each cold by then
	// (pkg/scheduler's BenchmarkCycle5000Nodes).
	s       *Scorer
	version uint64
	// memo caches scores by Request.id: ids below denseMemo in slices
	// (memo the part Rank reads, memoRes the Results), the others in a
	// map.
	memo         []memoEntry
	memoRes      []Result
	memoMore     lastMap[int32, memoFull]
	st           NodeState
	alloc        *topology.Allocator
	prod         []int       // product id per GPU
	sliceProfile [][]int     // per GPU, per MIG slice: the profile id
	sliceFrac    [][]float64 // per GPU, per MIG slice: its share of the GPU
	capacity     float64     // healthy GPU capacity, in GPUs
	free         float64     // free healthy GPU capacity, in GPUs
	// linked is true when the link matrix says anything: some pair has
	// NVLinks or a known PCIe path.
	linked bool

	mVer     uint64
	mEpoch   uint64
	mVal     measures
	agg      []shapeUse   // per target shape, as of mVer and mEpoch
	holeT    []*holeTable // per GPU (nil unless shared), as of mEpoch
	bestMask uint64
	bestOK   bool
	best     []bestQ
	whole    lastMap[wholeKey, wholeEntry]
	cand     []int
	migVer   uint64 // changes with the MIG slices' use and the GPUs' health
	migMemo  lastMap[migKey, migEntry]

	scratch []int
	migGPUs []topology.MIGGPU
	// migPlacements backs migGPUs' placements.
	migPlacements []gpu.Placement
	migIdx        []int
	// reg is the node's index in its scorer's nodes, hosts the pods of
	// each of the scorer's host shapes it can host (shapes.go).
	reg       int
	hosts     []int32
	shareGPUs []topology.ShareGPU
	// class is the node's machine class for the shared memo, or noClass
	// (shared.go).
	class   int32
	dropBuf []float64
	one     [1]int
}

// memoEntry is the part of a cached score that Rank reads: what the key
// is made of, with the host-shape losses packed in, in 64 bytes (one cache
// line where the slice's allocation is aligned, as Go's size classes for
// multiples of 64 bytes mostly are). The Result is kept beside it
// (NodeCache.memoRes).
type memoEntry struct {
	version, epoch uint64
	cost, drop     float64
	tie, capacity  float64
	product        int32
	feasible, set  bool
	// nloss is how many of losses are the Result's, or lossesInResult
	// when they did not fit (more of them, or numbers past a byte).
	nloss  uint8
	losses [4]packedLoss
}

// packedLoss is a shapeLoss in two bytes.
type packedLoss struct{ j, lost uint8 }

const lossesInResult = 255

// fill makes e the memo of res, computed at the node's version and the
// scorer's epoch.
func (e *memoEntry) fill(res *Result, version, epoch uint64) {
	e.version, e.epoch, e.cost, e.drop, e.tie = version, epoch, res.HardwareCost, res.drop, res.tie
	e.capacity, e.product, e.feasible, e.set = res.capacity, int32(res.product), res.Err == nil, true
	e.nloss = lossesInResult
	if len(res.losses) > len(e.losses) {
		return
	}
	for i, l := range res.losses {
		if l.j < 0 || l.j > 255 || l.lost < 0 || l.lost > 255 {
			return
		}
		e.losses[i] = packedLoss{j: uint8(l.j), lost: uint8(l.lost)}
	}
	e.nloss = uint8(len(res.losses))
}

// memoFull is a memo of a request id past denseMemo.
type memoFull struct {
	memoEntry
	res Result
}

type bestQ struct {
	q  topology.Quality
	ok bool
}

// NewNode validates st and returns a cached node holding a copy of it.
func (s *Scorer) NewNode(st NodeState) (*NodeCache, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	numa := make([]int, len(st.GPUs))
	for i, g := range st.GPUs {
		numa[i] = g.NUMANode
	}
	alloc, err := topology.New(st.Topology, numa)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", st.Name, err)
	}
	n := &NodeCache{s: s, st: cloneState(st), alloc: alloc, version: 1}
	for i, row := range st.Topology.Links {
		for j, l := range row {
			if i != j && (l.NVLinks > 0 || l.PCIe != gpu.PathUnknown) {
				n.linked = true
			}
		}
	}
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		n.prod = append(n.prod, s.productID(g.Product))
		var ids []int
		var fr []float64
		if g.Mode == ModeMIG {
			maxSlices := 0
			for _, p := range g.MIGProfiles {
				maxSlices = max(maxSlices, p.SliceCount)
			}
			for _, sl := range g.MIGSlices {
				ids = append(ids, s.profileID(sl.Profile))
				sc := 0
				for _, p := range g.MIGProfiles {
					if p.Name == sl.Profile {
						sc = p.SliceCount
					}
				}
				f := 0.0
				if maxSlices > 0 {
					f = float64(sc) / float64(maxSlices)
				}
				fr = append(fr, f)
			}
		}
		n.sliceProfile = append(n.sliceProfile, ids)
		n.sliceFrac = append(n.sliceFrac, fr)
	}
	for i := range n.st.GPUs {
		n.capacity += n.gpuCapacity(i, false)
		n.free += n.gpuCapacity(i, true)
	}
	n.class = s.classOf(n)
	s.addPresent(n, 1)
	n.reg = len(s.nodes)
	s.nodes = append(s.nodes, n)
	s.updateHosts(n, 1)
	return n, nil
}

// RemoveNode tells the scorer that n left the cluster: its products no
// longer count as present for the product score, nor its free capacity
// for the scarcity cost, nor the multi-GPU pods it could host for the
// shape cost. Removing a node twice changes nothing.
func (s *Scorer) RemoveNode(n *NodeCache) {
	if n.reg < 0 || n.reg >= len(s.nodes) || s.nodes[n.reg] != n {
		return // removed before, or another scorer's
	}
	s.addPresent(n, -1)
	s.updateHosts(n, -1)
	last := s.nodes[len(s.nodes)-1]
	s.nodes[n.reg], last.reg = last, n.reg
	s.nodes[len(s.nodes)-1] = nil
	s.nodes = s.nodes[:len(s.nodes)-1]
	n.reg = -1
}

// addPresent counts n's GPUs, and their free capacity, in (or out of) the
// present products; when a product appears or disappears, cached scores are
// recomputed.
func (s *Scorer) addPresent(n *NodeCache, sign int) {
	for i, id := range n.prod {
		f := float64(sign) * n.gpuCapacity(i, true)
		s.productFree[id] += f
		s.clusterFree += f
		before := s.present[id]
		s.present[id] += sign
		if (before > 0) != (s.present[id] > 0) {
			s.presentGen++
			s.epoch++
		}
	}
}

func cloneState(st NodeState) NodeState {
	out := st
	out.GPUs = slices.Clone(st.GPUs)
	for i := range out.GPUs {
		out.GPUs[i].MIGSlices = slices.Clone(st.GPUs[i].MIGSlices)
	}
	out.Topology = gpu.NewTopology(len(st.Topology.Links))
	for i := range st.Topology.Links {
		copy(out.Topology.Links[i], st.Topology.Links[i])
	}
	return out
}

// State returns the node's current state; callers must not modify it.
func (n *NodeCache) State() *NodeState { return &n.st }

// Version changes whenever the node's state does (Assume, Forget,
// SetHealthy): a caller that saw the state at one version knows it is the
// same while the version is.
func (n *NodeCache) Version() uint64 { return n.version }

// Allocator returns the node's device-set allocator.
func (n *NodeCache) Allocator() *topology.Allocator { return n.alloc }

// Capacity returns the node's healthy GPU capacity and the free part of it,
// in GPUs (a MIG slice counts its compute slices over the GPU's, a share
// its units over the GPU's).
func (n *NodeCache) Capacity() (total, free float64) { return n.capacity, n.free }

// GPUFree returns the free capacity of GPU i, in GPUs (0 when unhealthy).
func (n *NodeCache) GPUFree(i int) float64 { return n.gpuCapacity(i, true) }

// SliceFraction returns the share of its GPU that MIG slice j of GPU i is.
func (n *NodeCache) SliceFraction(i, j int) float64 { return n.sliceFrac[i][j] }

func (n *NodeCache) gpuCapacity(i int, freeOnly bool) float64 {
	g := &n.st.GPUs[i]
	if !g.Healthy {
		return 0
	}
	switch g.Mode {
	case ModeWhole:
		if freeOnly && g.Used {
			return 0
		}
		return 1
	case ModeShared:
		if freeOnly {
			return float64(g.ShareFree) / float64(g.ShareTotal)
		}
		return 1
	case ModeMIG:
		c := 0.0
		for j, sl := range g.MIGSlices {
			if !freeOnly || !sl.Used {
				c += n.sliceFrac[i][j]
			}
		}
		return c
	}
	return 0
}

// demandCapacity is the GPU capacity a's placement of r takes, in GPUs.
func (n *NodeCache) demandCapacity(r *Request, a *Assignment) float64 {
	switch r.kind {
	case KindWhole:
		return float64(len(a.GPUs))
	case KindShare:
		return float64(r.Demand.ShareUnits) / float64(n.st.GPUs[a.GPUs[0]].ShareTotal)
	case KindMIG:
		return n.sliceFrac[a.GPUs[0]][a.Slice]
	}
	return 0
}

// Assume records that the pod of r holds the devices of a on the node (the
// scheduler's Reserve); it fails, changing nothing, when a does not match r
// or the devices are not free.
func (n *NodeCache) Assume(r *Request, a Assignment) error { return n.apply(r, a, true) }

// Forget undoes Assume (an unreserved or deleted pod); it fails, changing
// nothing, when the devices are not held.
func (n *NodeCache) Forget(r *Request, a Assignment) error { return n.apply(r, a, false) }

func (n *NodeCache) apply(r *Request, a Assignment, take bool) error {
	d := &r.Demand
	verb := "assume"
	if !take {
		verb = "forget"
	}
	for _, g := range a.GPUs {
		if g < 0 || g >= len(n.st.GPUs) {
			return fmt.Errorf("%s on node %q: gpu position %d, the node has %d gpus", verb, n.st.Name, g, len(n.st.GPUs))
		}
	}
	switch r.kind {
	case KindNone:
		if len(a.GPUs) != 0 {
			return fmt.Errorf("%s on node %q: a cpu-only pod holds no gpu, got %v", verb, n.st.Name, a.GPUs)
		}
	case KindWhole:
		if len(a.GPUs) != d.GPUs {
			return fmt.Errorf("%s on node %q: the pod asks for %d gpus, the assignment has %v", verb, n.st.Name, d.GPUs, a.GPUs)
		}
		for i, g := range a.GPUs {
			st := &n.st.GPUs[g]
			whole := st.Mode == ModeWhole || st.Mode == ModeShared && st.ShareWhole && (!take || st.ShareFree == st.ShareTotal)
			if !whole || st.Used != !take || slices.Contains(a.GPUs[:i], g) {
				return fmt.Errorf("%s on node %q: gpu %d is %s, used=%t, %d of %d units free (or listed twice)", verb, n.st.Name, g, st.Mode, st.Used, st.ShareFree, st.ShareTotal)
			}
		}
	case KindShare:
		if len(a.GPUs) != 1 {
			return fmt.Errorf("%s on node %q: share units come from one gpu, the assignment has %v", verb, n.st.Name, a.GPUs)
		}
		st := &n.st.GPUs[a.GPUs[0]]
		if st.Mode != ModeShared || st.Used {
			return fmt.Errorf("%s on node %q: gpu %d is %s (used whole=%t), not shared", verb, n.st.Name, a.GPUs[0], st.Mode, st.Used)
		}
		if take && st.ShareFree < d.ShareUnits || !take && st.ShareTotal-st.ShareFree < d.ShareUnits {
			return fmt.Errorf("%s on node %q: gpu %d has %d of %d units free, the pod has %d", verb, n.st.Name, a.GPUs[0], st.ShareFree, st.ShareTotal, d.ShareUnits)
		}
	case KindMIG:
		if len(a.GPUs) != 1 {
			return fmt.Errorf("%s on node %q: a mig slice is on one gpu, the assignment has %v", verb, n.st.Name, a.GPUs)
		}
		g := a.GPUs[0]
		st := &n.st.GPUs[g]
		if st.Mode != ModeMIG || a.Slice < 0 || a.Slice >= len(st.MIGSlices) {
			return fmt.Errorf("%s on node %q: gpu %d (%s) has no mig slice %d", verb, n.st.Name, g, st.Mode, a.Slice)
		}
		sl := st.MIGSlices[a.Slice]
		if sl.Profile != d.MIGProfile || sl.Used != !take {
			return fmt.Errorf("%s on node %q: mig slice %d of gpu %d is %s at %s used=%t, the pod asks for %s",
				verb, n.st.Name, a.Slice, g, sl.Profile, sl.Placement, sl.Used, d.MIGProfile)
		}
	}
	sign := int64(1)
	if !take {
		sign = -1
	}
	before := 0.0
	for _, g := range a.GPUs {
		c := n.gpuCapacity(g, true)
		before += c
		n.s.productFree[n.prod[g]] -= c
		n.s.clusterFree -= c
	}
	n.st.CPUFree -= sign * d.CPU
	n.st.MemFree -= sign * d.Memory
	switch r.kind {
	case KindWhole:
		for _, g := range a.GPUs {
			st := &n.st.GPUs[g]
			st.Used = take
			if st.Mode == ModeShared {
				st.ShareFree = 0
				if !take {
					st.ShareFree = st.ShareTotal
				}
			}
		}
	case KindShare:
		n.st.GPUs[a.GPUs[0]].ShareFree -= int(sign) * d.ShareUnits
	case KindMIG:
		n.st.GPUs[a.GPUs[0]].MIGSlices[a.Slice].Used = take
		n.migVer++
	}
	after := 0.0
	for _, g := range a.GPUs {
		c := n.gpuCapacity(g, true)
		after += c
		n.s.productFree[n.prod[g]] += c
		n.s.clusterFree += c
	}
	n.free += after - before
	n.version++
	n.s.updateHosts(n, 1)
	return nil
}

// SetFree sets the node's free CPU (milli-CPU) and memory (MiB), as the
// scheduler counts them with every pod, GPU or not; it invalidates cached
// scores only when they change. (Taking the difference as a CPU-only
// request, as the scheduler plugin did, compiled a request for every
// difference it met: the scorer's requests grew without bound.)
func (n *NodeCache) SetFree(cpu, mem int64) error {
	if cpu < 0 || mem < 0 {
		return fmt.Errorf("node %q: free cpu %d and memory %d must not be negative", n.st.Name, cpu, mem)
	}
	if cpu == n.st.CPUFree && mem == n.st.MemFree {
		return nil
	}
	n.st.CPUFree, n.st.MemFree = cpu, mem
	n.version++
	n.s.updateHosts(n, 1)
	return nil
}

// SetHealthy marks GPU i healthy or not (the agent's health state machine),
// invalidating cached scores.
func (n *NodeCache) SetHealthy(i int, healthy bool) error {
	if i < 0 || i >= len(n.st.GPUs) {
		return fmt.Errorf("node %q: gpu position %d, the node has %d gpus", n.st.Name, i, len(n.st.GPUs))
	}
	was := n.gpuCapacity(i, true)
	n.capacity -= n.gpuCapacity(i, false)
	n.free -= was
	n.st.GPUs[i].Healthy = healthy
	n.migVer++
	n.capacity += n.gpuCapacity(i, false)
	now := n.gpuCapacity(i, true)
	n.free += now
	n.s.productFree[n.prod[i]] += now - was
	n.s.clusterFree += now - was
	n.version++
	n.s.updateHosts(n, 1)
	return nil
}

// wholeMask is the bit mask of the node's GPUs that can go whole now.
func (n *NodeCache) wholeMask() uint64 {
	var m uint64
	for i := range n.st.GPUs {
		if n.st.GPUs[i].wholeFree() {
			m |= 1 << i
		}
	}
	return m
}

// bestBefore is, per look-ahead size, the best quality the node's free whole
// GPUs offer now (cached per set of free whole GPUs). known, when not nil,
// is already known: that of the size known.Size.
func (n *NodeCache) bestBefore(s *Scorer, known *topology.Quality) []bestQ {
	mask := n.wholeMask()
	if n.bestOK && n.bestMask == mask {
		return n.best
	}
	n.best = n.best[:0]
	free := n.wholeFree(n.scratch[:0], nil)
	n.scratch = free
	for _, m := range s.cfg.Lookahead {
		b := bestQ{}
		switch {
		case len(free) < m:
		case known != nil && known.Size == m:
			b = bestQ{q: *known, ok: true}
		default:
			if q, err := n.alloc.BestQuality(free, nil, m); err == nil {
				b = bestQ{q: q, ok: true}
			}
		}
		n.best = append(n.best, b)
	}
	n.bestMask, n.bestOK = mask, true
	return n.best
}

// delta is a placement under consideration, applied on the fly by frag
// and measure: the pod's CPU, its kind, devices and units, and the GPU
// capacity it takes.
type delta struct {
	cpu      int64
	kind     Kind
	a        *Assignment
	units    int
	capacity float64
}

// unitsLeft is the free units of shared GPU g, one that dl takes, after dl.
func (dl *delta) unitsLeft(g *GPU) int {
	switch dl.kind {
	case KindShare:
		return g.ShareFree - dl.units
	case KindWhole:
		return 0
	}
	return g.ShareFree
}

// measures are what a score's drop is made of, for one node state: the expected fragmentation, the free capacity the node's CPU
// cannot feed at the target's ratio, and the expected residue of the
// shared GPUs' free units, all in GPUs.
type measures struct{ frag, cpu, hole float64 }

// total weighs the measures as the score does.
func (m measures) total(s *Scorer) float64 {
	return m.frag + s.cfg.CPUStranded*m.cpu + s.cfg.HoleResidue*m.hole
}

// measureBefore returns the node's measures as it is (cached per node
// version and target epoch, with each target shape's use of the node).
func (n *NodeCache) measureBefore(s *Scorer) measures {
	if n.mVer != n.version || n.mEpoch != s.epoch {
		n.useOfShapes(s.shapes)
		m := measures{frag: n.frag(s.shapes, nil)}
		if s.ratio > 0 {
			m.cpu = max(0, n.free-float64(n.st.CPUFree)*s.ratio)
		}
		if s.cfg.HoleResidue != 0 {
			n.holeT = n.holeT[:0]
			for i := range n.st.GPUs {
				var t *holeTable
				if g := &n.st.GPUs[i]; g.Mode == ModeShared && g.Healthy {
					t = s.holeTable(n.prod[i], g)
					m.hole += t.at(g.ShareFree)
				}
				n.holeT = append(n.holeT, t)
			}
		}
		n.mVal, n.mVer, n.mEpoch = m, n.version, s.epoch
	}
	return n.mVal
}

// measure returns the node's measures after the placement dl.
func (n *NodeCache) measure(s *Scorer, dl *delta) measures {
	before := n.measureBefore(s)
	m := measures{frag: n.frag(s.shapes, dl)}
	if s.ratio > 0 {
		m.cpu = max(0, n.free-dl.capacity-float64(n.st.CPUFree-dl.cpu)*s.ratio)
	}
	m.hole = before.hole
	if s.cfg.HoleResidue != 0 && (dl.kind == KindShare || dl.kind == KindWhole) {
		// Only the GPUs the placement takes change their residue.
		for _, i := range dl.a.GPUs {
			g := &n.st.GPUs[i]
			if g.Mode != ModeShared || !g.Healthy {
				continue
			}
			t := n.holeT[i]
			m.hole += t.entered(dl.unitsLeft(g)) - t.at(g.ShareFree)
		}
	}
	return m
}

// shapeUse is what one target shape can use of a node: the capacity, in
// GPUs, of the GPUs it can use, and how many they are.
type shapeUse struct {
	usable float64
	count  int
}

// gpuUse is the capacity of GPU i, in GPUs, that a pod of r could use, with
// dl applied when not nil, and whether r can use the GPU at all: a free
// whole GPU (or a shared one with ShareWhole and every unit free) for whole
// GPUs; the free units of a shared GPU with at least r's units free; the
// free slices of r's profile of a MIG GPU. The GPU must be healthy and of a
// product r allows.
func (n *NodeCache) gpuUse(r *Request, i int, dl *delta) (float64, bool) {
	g := &n.st.GPUs[i]
	if r.kind == KindNone || !g.Healthy || !r.allows(n.prod[i]) {
		return 0, false
	}
	touched := dl != nil && slices.Contains(dl.a.GPUs, i)
	switch r.kind {
	case KindWhole:
		if !g.wholeFree() || touched && (dl.kind == KindWhole || dl.kind == KindShare) {
			return 0, false
		}
		return 1, true
	case KindShare:
		if g.Mode != ModeShared || g.Used {
			return 0, false
		}
		free := g.ShareFree
		if touched {
			free = dl.unitsLeft(g)
		}
		if free >= r.Demand.ShareUnits {
			return float64(free) / float64(g.ShareTotal), true
		}
	case KindMIG:
		if g.Mode != ModeMIG {
			return 0, false
		}
		u := 0.0
		for j, sl := range g.MIGSlices {
			if sl.Used || n.sliceProfile[i][j] != r.profile || touched && dl.kind == KindMIG && dl.a.Slice == j {
				continue
			}
			u += n.sliceFrac[i][j]
		}
		return u, u > 0
	}
	return 0, false
}

// useOfShapes computes n.agg: each target shape's use of the node as it is
// (gpuUse summed over the GPUs, in ascending position; whole and share
// shapes by bit masks).
func (n *NodeCache) useOfShapes(shapes []targetShape) {
	var whole, share uint64
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		if g.wholeFree() {
			whole |= 1 << i
		}
		if g.Mode == ModeShared && g.Healthy && !g.Used {
			share |= 1 << i
		}
	}
	n.agg = n.agg[:0]
	for _, sh := range shapes {
		r := sh.r
		var a shapeUse
		switch r.kind {
		case KindWhole:
			m := whole
			if r.allowed != nil {
				for rest := m; rest != 0; rest &= rest - 1 {
					if i := bits.TrailingZeros64(rest); !r.allows(n.prod[i]) {
						m &^= 1 << i
					}
				}
			}
			a.count = bits.OnesCount64(m)
			a.usable = float64(a.count)
		case KindShare:
			for m := share; m != 0; m &= m - 1 {
				i := bits.TrailingZeros64(m)
				if g := &n.st.GPUs[i]; g.ShareFree >= r.Demand.ShareUnits && r.allows(n.prod[i]) {
					a.usable += float64(g.ShareFree) / float64(g.ShareTotal)
					a.count++
				}
			}
		case KindMIG:
			for i := range n.st.GPUs {
				if u, ok := n.gpuUse(r, i, nil); ok {
					a.usable += u
					a.count++
				}
			}
		}
		n.agg = append(n.agg, a)
	}
}

// frag is the node's expected fragmentation against the target shapes, in
// GPUs, with dl applied when not nil: for each shape, the free capacity it
// cannot use (all of it when it does not fit the node: CPU, product, too
// few GPUs, no slice of its profile, no GPU with its share units free;
// otherwise the capacity on GPUs it cannot use, see gpuUse), weighted by
// the shape's probability. It is FGD's measure generalised to MIG slices
// (a slice of another profile is unusable) and share units; like FGD's it
// leaves memory out. It starts from each shape's use of the node as it is
// (n.agg, kept by measureBefore) and recounts only the GPUs dl takes.
func (n *NodeCache) frag(shapes []targetShape, dl *delta) float64 {
	cpu, total := n.st.CPUFree, n.free
	if dl != nil {
		cpu -= dl.cpu
		total -= dl.capacity
	}
	var out float64
	for si := range shapes {
		r, p := shapes[si].r, shapes[si].p
		if r.kind == KindNone || cpu < r.Demand.CPU {
			out += p * total
			continue
		}
		a := n.agg[si]
		if dl != nil {
			n.recount(r, &a, dl)
		}
		need := 1
		if r.kind == KindWhole {
			need = r.Demand.GPUs
		}
		if a.count >= need {
			out += p * (total - a.usable)
		} else {
			out += p * total
		}
	}
	return out
}

// recount updates a, a shape's use of the node, for the GPUs dl takes: as
// gpuUse before and after dl, with the common cases written out.
func (n *NodeCache) recount(r *Request, a *shapeUse, dl *delta) {
	switch r.kind {
	case KindWhole:
		// A GPU dl takes is not free whole afterwards.
		for _, i := range dl.a.GPUs {
			if n.st.GPUs[i].wholeFree() && r.allows(n.prod[i]) {
				a.usable--
				a.count--
			}
		}
	case KindShare:
		for _, i := range dl.a.GPUs {
			g := &n.st.GPUs[i]
			if g.Mode != ModeShared || !g.Healthy || g.Used || !r.allows(n.prod[i]) {
				continue
			}
			before, after := g.ShareFree, dl.unitsLeft(g)
			if before >= r.Demand.ShareUnits {
				a.usable -= float64(before) / float64(g.ShareTotal)
				a.count--
			}
			if after >= r.Demand.ShareUnits {
				a.usable += float64(after) / float64(g.ShareTotal)
				a.count++
			}
		}
	case KindMIG:
		for _, i := range dl.a.GPUs {
			if u, ok := n.gpuUse(r, i, nil); ok {
				a.usable -= u
				a.count--
			}
			if u, ok := n.gpuUse(r, i, dl); ok {
				a.usable += u
				a.count++
			}
		}
	}
}

// Fragmentation returns the node's expected fragmentation, in GPUs, against
// the scorer's current target workload.
func (s *Scorer) Fragmentation(n *NodeCache) float64 { return n.measureBefore(s).frag }

// holeKey identifies a hole-residue table: the product and the GPU's units.
type holeKey struct {
	product, units int
	whole          bool
}

// holeTable gives, for every free amount h = 0..units of one shared GPU,
// the units expected to stay free on it for good, over units (in GPUs):
// E(h) = h when no target shape fits, else the mean of E(h − u) over the
// shapes whose pods will still come to the GPU, weighted by their
// probability and how likely that is, plus, for a partly used GPU (a
// hole), h times the chance that none does; a GPU with every unit free
// that no pod opens strands nothing (0), and whole-GPU shapes always come
// to it when they fit. Share shapes of u units fit
// when u <= h; whole-GPU shapes (any K) fit a GPU with ShareWhole when
// every unit is free and leave nothing. It ranks the holes a shared pod can
// leave by how well the workload's sizes pair up in them (350 milli beside
// a 650-milli pod is filled by a 320-milli pod), which the fragmentation
// does not see while some shape still fits.
//
// Holes compete for the pods that fit them: a pod goes to the tightest
// hole it fits (best fit, which the drop in fragmentation approximates:
// a tighter hole has less free capacity that other shapes could use, and
// the rule keeps the model simple), so a hole of h
// gets a pod of shape u only if the pods of u still to come outnumber the
// holes of u to h − 1 units that take them first (holeFill). Without
// this, a 190-milli hole beside an 810-milli pod reads as filled by the
// next 160-milli pod although thousands of such holes wait for the few of
// them (gpushare60: 1 % of the pods), and a pod that leaves 210 milli
// looks as good as one that leaves 60. A GPU with every unit free is the
// loosest hole: share pods open it only when the partly used holes that
// fit them are outnumbered. The census is the cluster's as of the epoch's
// first table; a placement that leaves a new hole counts it in (entered).
type holeTable struct {
	e []float64
	// What the table was computed from, for entered: the target's share
	// shapes that fit the kind, the holes below each size and the holes
	// of each size (fresh GPUs included).
	fills []holeFillShape
	below []float64
	same  []float64
}

// holeFillShape is a share shape of the target: its units, probability and
// pods still to come to the table's kind of GPU.
type holeFillShape struct {
	u    int
	p, a float64
}

func (t *holeTable) at(free int) float64 { return t.e[min(max(free, 0), len(t.e)-1)] }

// entered is E(free) for a GPU that a placement leaves with free units
// (0 < free < units) when it was not a hole of that size before: that hole
// is new, so it competes with the census's holes of its size for the pods
// to come (one hole more of that size). The table, computed from the census
// alone, does not count it: a pod that leaves a hole beside one the census
// expects the pods to come to fill would read as leaving a hole as sure to
// be filled, and a small cluster's pods would spread over two GPUs, each
// half filled, rather than fill one.
func (t *holeTable) entered(free int) float64 {
	units := len(t.e) - 1
	if free <= 0 || free >= units {
		return t.at(free)
	}
	var sum, w float64
	none := 1.0
	for _, f := range t.fills {
		if f.u > free {
			continue
		}
		phi := holeFill(f.a, t.below[free]-t.below[f.u], t.same[free]+1)
		sum += f.p * phi * t.e[free-f.u]
		w += f.p * phi
		none *= 1 - phi
	}
	h := float64(free) / float64(units)
	if w == 0 {
		return h
	}
	return (1-none)*sum/w + none*h
}

// holeTable returns the table of g's kind of GPU against the current
// target and the cluster's holes, computing it on first use in the epoch.
func (s *Scorer) holeTable(product int, g *GPU) *holeTable {
	k := holeKey{product: product, units: g.ShareTotal, whole: g.ShareWhole}
	if t, ok := s.holes[k]; ok {
		return t
	}
	if len(s.holes) == 0 {
		s.countHoles()
	}
	units := g.ShareTotal
	// below[h] is the number of the cluster's holes of this kind with
	// fewer than h units free.
	below := make([]float64, units+1)
	if n := s.census[k]; n != nil {
		for h := 1; h <= units; h++ {
			below[h] = below[h-1] + float64(n[h-1])
		}
	}
	type fill = holeFillShape
	var fills []fill
	e := make([]float64, units+1)
	var wholeP float64
	for _, sh := range s.shapes {
		r := sh.r
		if !r.allows(product) {
			continue
		}
		switch {
		case r.kind == KindShare:
			fills = append(fills, fill{u: r.Demand.ShareUnits, p: sh.p, a: s.podsToCome(r, product, sh.p)})
		case r.kind == KindWhole && g.ShareWhole:
			wholeP += sh.p
		}
	}
	for h := range e {
		var sum, w, none float64
		none = 1
		fits := false
		for _, f := range fills {
			if f.u > h {
				continue
			}
			fits = true
			// A GPU with every unit free competes too, as the loosest
			// hole: a share pod opens it only when the pods of its shape
			// outnumber the partly used holes that fit them (best fit).
			phi := holeFill(f.a, below[h]-below[f.u], float64(s.census[k].at(h)))
			sum += f.p * phi * e[h-f.u]
			w += f.p * phi
			none *= 1 - phi
		}
		switch {
		case h == units && (fits || wholeP > 0):
			// A GPU that no share pod opens strands nothing: its units stay
			// whole for whatever comes (a whole-GPU pod, if ShareWhole, or
			// pods beyond the target's horizon). Counting it as stranded
			// would make a fresh GPU look worse than a hole that the pods
			// to come are expected to fill, and the pod being placed, which
			// is one of them, would open a fresh GPU rather than fill it.
			w += wholeP // E(0) = 0
			if w > 0 {
				e[h] = (1 - none) * sum / w
			}
		case w == 0:
			e[h] = float64(h)
		default:
			e[h] = (1-none)*sum/w + none*float64(h)
		}
	}
	for h := range e {
		e[h] /= float64(units)
	}
	same := make([]float64, units+1)
	for h := range same {
		same[h] = float64(s.census[k].at(h))
	}
	t := &holeTable{e: e, fills: fills, below: below, same: same}
	s.holes[k] = t
	return t
}

// holeFill is the chance that a hole gets one of the a pods of a shape
// still to come: the tighter holes the shape fits (tighter of them) take
// the first pods, one each, and what is left is shared among the holes of
// this hole's size (same of them, counted as at least this one).
func holeFill(a, tighter, same float64) float64 {
	return min(1, max(0, (a-tighter)/max(same, 1)))
}

// podsToCome is how many pods of a shape of probability p that the GPUs of
// product can expect before the cluster's free capacity is taken: the pods
// that arrive while it is (its free capacity over the target's GPUs per
// pod), the product's part of them (its share of the free capacity of the
// products the shape allows).
func (s *Scorer) podsToCome(r *Request, product int, p float64) float64 {
	if s.gpusPerPod <= 0 {
		return 0
	}
	allowed := s.clusterFree
	if r.allowed != nil {
		allowed = 0
		for _, id := range r.allowed {
			allowed += s.productFree[id]
		}
	}
	if allowed <= 0 {
		return 0
	}
	return p * s.clusterFree / s.gpusPerPod * s.productFree[product] / allowed
}

// holeCount counts holes by free units.
type holeCount []int32

func (c holeCount) at(h int) int32 {
	if h < 0 || h >= len(c) {
		return 0
	}
	return c[h]
}

// countHoles counts the cluster's holes (healthy shared GPUs with units
// free: partly used, or fresh at ShareTotal) by kind and free units, for
// the hole tables of the epoch.
func (s *Scorer) countHoles() {
	for k := range s.census {
		clear(s.census[k])
	}
	for _, n := range s.nodes {
		for i := range n.st.GPUs {
			g := &n.st.GPUs[i]
			if g.Mode != ModeShared || !g.Healthy || g.Used || g.ShareFree <= 0 {
				continue
			}
			k := holeKey{product: n.prod[i], units: g.ShareTotal, whole: g.ShareWhole}
			c := s.census[k]
			if c == nil {
				c = make(holeCount, g.ShareTotal+1)
				s.census[k] = c
			}
			c[g.ShareFree]++
		}
	}
}

// targetShape is one request of the target workload with its probability.
type targetShape struct {
	r *Request
	p float64
}

// demandWorkload is an exponentially decayed histogram of requests, by
// shape (Request.shape).
type demandWorkload struct {
	decay  float64
	scale  float64
	keys   map[reqKey]int
	reqs   []*Request
	weight []float64
}

func newDemandWorkload(decay float64) *demandWorkload {
	return &demandWorkload{decay: decay, scale: 1, keys: map[reqKey]int{}}
}

func (w *demandWorkload) add(r *Request, weight float64) {
	i, ok := w.keys[r.shape]
	if !ok {
		i = len(w.reqs)
		w.keys[r.shape] = i
		w.reqs = append(w.reqs, r)
		w.weight = append(w.weight, 0)
	}
	w.weight[i] += weight * w.scale
}

func (w *demandWorkload) observe(r *Request) {
	w.add(r, 1)
	w.scale /= w.decay
	if w.scale > 1e100 {
		for j := range w.weight {
			w.weight[j] /= w.scale
		}
		w.scale = 1
	}
}

// shapes returns the heaviest requests covering coverage of the weight,
// at most limit of them, probabilities summing to 1, appended to dst, and
// the weight they cover (a shape's probability is its weight over it).
func (w *demandWorkload) shapes(limit int, coverage float64, dst []targetShape) ([]targetShape, float64) {
	idx := make([]int, 0, len(w.reqs))
	sum := 0.0
	for i, wt := range w.weight {
		if wt > 0 {
			idx = append(idx, i)
			sum += wt
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return w.weight[idx[a]] > w.weight[idx[b]] })
	cum, n := 0.0, 0
	for n < len(idx) && n < limit && cum < coverage*sum {
		cum += w.weight[idx[n]]
		n++
	}
	for _, i := range idx[:n] {
		dst = append(dst, targetShape{r: w.reqs[i], p: w.weight[i] / cum})
	}
	return dst, cum
}

// dropCaches forgets every derived value, the scorer's shared memo
// included (tests measure the cold path).
func (n *NodeCache) dropCaches() {
	n.s.sharedDrop()
	clear(n.memo)
	clear(n.memoRes)
	n.memoMore, n.whole, n.bestOK, n.migMemo = lastMap[int32, memoFull]{}, lastMap[wholeKey, wholeEntry]{}, false, lastMap[migKey, migEntry]{}
	n.mVer = 0
}

// lastMap is a map that keeps its most recent entry out of the map: a node
// scored for one kind of pod at a time, as in a scheduling cycle, needs no
// map look-up and no map at all.
type lastMap[K comparable, V any] struct {
	ok   bool
	key  K
	val  V
	more map[K]V
}

// get returns the value stored under k.
func (m *lastMap[K, V]) get(k K) (V, bool) {
	if m.ok && m.key == k {
		return m.val, true
	}
	v, ok := m.more[k]
	return v, ok
}

// put stores v under k; when the map already holds limit entries (limit >
// 0), it starts over.
func (m *lastMap[K, V]) put(k K, v V, limit int) {
	if m.ok && m.key != k {
		if m.more == nil || (limit > 0 && len(m.more) >= limit) {
			m.more = map[K]V{}
		}
		m.more[m.key] = m.val
	}
	delete(m.more, k)
	m.ok, m.key, m.val = true, k, v
}
