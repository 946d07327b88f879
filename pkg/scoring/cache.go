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
	st           NodeState
	alloc        *topology.Allocator
	prod         []int       // product id per GPU
	sliceProfile [][]int     // per GPU, per MIG slice: the profile id
	sliceFrac    [][]float64 // per GPU, per MIG slice: its share of the GPU
	capacity     float64     // healthy GPU capacity, in GPUs
	free         float64     // free healthy GPU capacity, in GPUs
	version      uint64

	memo      lastMap[reqKey, memoEntry]
	fragVer   uint64
	fragEpoch uint64
	fragVal   float64
	bestMask  uint64
	bestOK    bool
	best      []bestQ
	whole     lastMap[wholeKey, wholeEntry]
	cand      []int
	migVer    uint64 // changes with the MIG slices' use and the GPUs' health
	migMemo   lastMap[migKey, migEntry]

	scratch []int
	migGPUs []topology.MIGGPU
	// migPlacements backs migGPUs' placements.
	migPlacements []gpu.Placement
	migIdx        []int
	shareGPUs     []topology.ShareGPU
}

type memoEntry struct {
	version, epoch uint64
	res            Result
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
	n := &NodeCache{st: cloneState(st), alloc: alloc, version: 1}
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
	s.addPresent(n, 1)
	for i := range n.st.GPUs {
		n.capacity += n.gpuCapacity(i, false)
		n.free += n.gpuCapacity(i, true)
	}
	return n, nil
}

// RemoveNode tells the scorer that n left the cluster: its products no
// longer count as present for the product score.
func (s *Scorer) RemoveNode(n *NodeCache) { s.addPresent(n, -1) }

// addPresent counts n's GPUs in (or out of) the present products; when a
// product appears or disappears, cached scores are recomputed.
func (s *Scorer) addPresent(n *NodeCache, sign int) {
	for _, id := range n.prod {
		for len(s.present) <= id {
			s.present = append(s.present, 0)
		}
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

func (n *NodeCache) freeCapacity() float64 { return n.free }

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
			if st.Mode != ModeWhole || st.Used != !take || slices.Contains(a.GPUs[:i], g) {
				return fmt.Errorf("%s on node %q: gpu %d is %s, used=%t (or listed twice)", verb, n.st.Name, g, st.Mode, st.Used)
			}
		}
	case KindShare:
		if len(a.GPUs) != 1 {
			return fmt.Errorf("%s on node %q: share units come from one gpu, the assignment has %v", verb, n.st.Name, a.GPUs)
		}
		st := &n.st.GPUs[a.GPUs[0]]
		if st.Mode != ModeShared {
			return fmt.Errorf("%s on node %q: gpu %d is %s, not shared", verb, n.st.Name, a.GPUs[0], st.Mode)
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
		before += n.gpuCapacity(g, true)
	}
	n.st.CPUFree -= sign * d.CPU
	n.st.MemFree -= sign * d.Memory
	switch r.kind {
	case KindWhole:
		for _, g := range a.GPUs {
			n.st.GPUs[g].Used = take
		}
	case KindShare:
		n.st.GPUs[a.GPUs[0]].ShareFree -= int(sign) * d.ShareUnits
	case KindMIG:
		n.st.GPUs[a.GPUs[0]].MIGSlices[a.Slice].Used = take
		n.migVer++
	}
	after := 0.0
	for _, g := range a.GPUs {
		after += n.gpuCapacity(g, true)
	}
	n.free += after - before
	n.version++
	return nil
}

// SetHealthy marks GPU i healthy or not (the agent's health state machine),
// invalidating cached scores.
func (n *NodeCache) SetHealthy(i int, healthy bool) error {
	if i < 0 || i >= len(n.st.GPUs) {
		return fmt.Errorf("node %q: gpu position %d, the node has %d gpus", n.st.Name, i, len(n.st.GPUs))
	}
	n.capacity -= n.gpuCapacity(i, false)
	n.free -= n.gpuCapacity(i, true)
	n.st.GPUs[i].Healthy = healthy
	n.migVer++
	n.capacity += n.gpuCapacity(i, false)
	n.free += n.gpuCapacity(i, true)
	n.version++
	return nil
}

// wholeMask is the bit mask of the node's free, healthy whole GPUs.
func (n *NodeCache) wholeMask() uint64 {
	var m uint64
	for i := range n.st.GPUs {
		if g := &n.st.GPUs[i]; g.Mode == ModeWhole && g.Healthy && !g.Used {
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

// delta is a placement under consideration, applied on the fly by frag.
type delta struct {
	cpu, mem int64
	kind     Kind
	a        *Assignment
	units    int
}

func (n *NodeCache) fragBefore(s *Scorer) float64 {
	if n.fragVer != n.version || n.fragEpoch != s.epoch {
		n.fragVal = n.frag(s.shapes, nil)
		n.fragVer, n.fragEpoch = n.version, s.epoch
	}
	return n.fragVal
}

// frag is the node's expected fragmentation against the target shapes, in
// GPUs, with dl applied when not nil: for each shape, the free capacity it
// cannot use (all of it when it does not fit the node: CPU, memory,
// product, too few GPUs, no slice of its profile, no GPU with its share
// units free; otherwise the capacity on GPUs it cannot use), weighted by the
// shape's probability. It generalises FGD's measure to MIG slices (a slice
// of another profile is unusable) and share units.
func (n *NodeCache) frag(shapes []targetShape, dl *delta) float64 {
	cpu, mem, total := n.st.CPUFree, n.st.MemFree, n.free
	if dl != nil {
		cpu -= dl.cpu
		mem -= dl.mem
		switch dl.kind {
		case KindWhole:
			total -= float64(len(dl.a.GPUs))
		case KindShare:
			total -= float64(dl.units) / float64(n.st.GPUs[dl.a.GPUs[0]].ShareTotal)
		case KindMIG:
			total -= n.sliceFrac[dl.a.GPUs[0]][dl.a.Slice]
		}
	}
	// The healthy GPUs by mode, the whole ones only when free.
	var whole, mig, share uint64
	for i := range n.st.GPUs {
		switch g := &n.st.GPUs[i]; {
		case !g.Healthy:
		case g.Mode == ModeWhole:
			if !g.Used {
				whole |= 1 << i
			}
		case g.Mode == ModeMIG:
			mig |= 1 << i
		case g.Mode == ModeShared:
			share |= 1 << i
		}
	}
	if dl != nil && dl.kind == KindWhole {
		whole &^= bitmask(dl.a.GPUs)
	}
	var out float64
	for si := range shapes {
		r, p := shapes[si].r, shapes[si].p
		if r.kind == KindNone || cpu < r.Demand.CPU || mem < r.Demand.Memory {
			out += p * total
			continue
		}
		// GPUs are taken in ascending position, so that the usable
		// capacity is summed in the same order whatever the kind.
		usable, count := 0.0, 0
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
			// A sum of ones: exactly the count.
			count = bits.OnesCount64(m)
			usable = float64(count)
		case KindMIG:
			for m := mig; m != 0; m &= m - 1 {
				i := bits.TrailingZeros64(m)
				if !r.allows(n.prod[i]) {
					continue
				}
				u := 0.0
				for j, sl := range n.st.GPUs[i].MIGSlices {
					if sl.Used || n.sliceProfile[i][j] != r.profile ||
						(dl != nil && dl.kind == KindMIG && dl.a.GPUs[0] == i && dl.a.Slice == j) {
						continue
					}
					u += n.sliceFrac[i][j]
				}
				if u > 0 {
					usable += u
					count++
				}
			}
		case KindShare:
			for m := share; m != 0; m &= m - 1 {
				i := bits.TrailingZeros64(m)
				if !r.allows(n.prod[i]) {
					continue
				}
				g := &n.st.GPUs[i]
				free := g.ShareFree
				if dl != nil && dl.kind == KindShare && dl.a.GPUs[0] == i {
					free -= dl.units
				}
				if free >= r.Demand.ShareUnits {
					usable += float64(free) / float64(g.ShareTotal)
					count++
				}
			}
		}
		need := 1
		if r.kind == KindWhole {
			need = r.Demand.GPUs
		}
		if count >= need {
			out += p * (total - usable)
		} else {
			out += p * total
		}
	}
	return out
}

// Fragmentation returns the node's expected fragmentation, in GPUs, against
// the scorer's current target workload.
func (s *Scorer) Fragmentation(n *NodeCache) float64 { return n.fragBefore(s) }

// targetShape is one request of the target workload with its probability.
type targetShape struct {
	r *Request
	p float64
}

// demandWorkload is an exponentially decayed histogram of requests.
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
	i, ok := w.keys[r.key]
	if !ok {
		i = len(w.reqs)
		w.keys[r.key] = i
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

// shapes returns the at most limit heaviest requests, probabilities summing
// to 1, appended to dst.
func (w *demandWorkload) shapes(limit int, dst []targetShape) []targetShape {
	idx := make([]int, 0, len(w.reqs))
	for i, wt := range w.weight {
		if wt > 0 {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return w.weight[idx[a]] > w.weight[idx[b]] })
	if len(idx) > limit {
		idx = idx[:limit]
	}
	sum := 0.0
	for _, i := range idx {
		sum += w.weight[i]
	}
	for _, i := range idx {
		dst = append(dst, targetShape{r: w.reqs[i], p: w.weight[i] / sum})
	}
	return dst
}

// dropCaches forgets every derived value (tests measure the cold path).
func (n *NodeCache) dropCaches() {
	n.memo, n.whole, n.bestOK, n.migMemo = lastMap[reqKey, memoEntry]{}, lastMap[wholeKey, wholeEntry]{}, false, lastMap[migKey, migEntry]{}
	n.fragVer = 0
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
