package topology

// The allocator's search as it was before it was optimised (branch and bound
// over position slices, eager look-ahead of every tie), kept verbatim as the
// reference that TestAllocateMatchesReference compares the search against.

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// refPositions lists the bits of m, ascending.
func refPositions(m uint64) []int {
	out := make([]int, 0, bits.OnesCount64(m))
	for ; m != 0; m &= m - 1 {
		out = append(out, bits.TrailingZeros64(m))
	}
	return out
}

// refPartial is a set being grown, with its quality kept incrementally.
type refPartial struct {
	mask  uint64
	count int
	minNV int // noPairs until the set has a pair
	sumNV int
	path  gpu.PCIePath
	numa  uint64
}

func refEmptyPartial() refPartial { return refPartial{minNV: noPairs, path: gpu.PathSame} }

// add returns p with device d added.
func (a *Allocator) refAdd(p refPartial, d int) refPartial {
	row := a.nv[d*a.n : (d+1)*a.n]
	prow := a.path[d*a.n : (d+1)*a.n]
	for m := p.mask; m != 0; m &= m - 1 {
		j := bits.TrailingZeros64(m)
		nv := row[j]
		p.minNV = min(p.minNV, nv)
		p.sumNV += nv
		p.path = max(p.path, prow[j])
	}
	p.mask |= 1 << d
	p.count++
	p.numa |= a.numa[d]
	return p
}

func (p refPartial) refQuality() Quality {
	return Quality{
		Size:       p.count,
		MinNVLinks: p.minNV,
		NVLinks:    p.sumNV,
		PCIe:       p.path,
		NUMANodes:  bits.OnesCount64(p.numa),
	}
}

// refSearcher finds the best k-sets that extend a base set with candidates.
type refSearcher struct {
	a       *Allocator
	cand    []int // candidate positions, ascending
	k       int
	maxTies int
	have    bool
	best    Quality
	ties    []uint64 // sets of quality best, at most maxTies, in the order found
	// conn[t*n+j] is device j's NVLink count to the refPartial set of size t
	// on the current search path, far[t*n+j] its farthest PCIe path to it.
	conn []int          // (k+1)×n
	far  []gpu.PCIePath // (k+1)×n
	topR []int          // scratch for the bounds
	lowR []gpu.PCIePath
}

// leaf records a complete set.
func (s *refSearcher) leaf(p refPartial) {
	q := p.refQuality()
	if s.have {
		c := q.Compare(s.best)
		if c < 0 {
			return
		}
		if c == 0 {
			if len(s.ties) < s.maxTies && !slices.Contains(s.ties, p.mask) {
				s.ties = append(s.ties, p.mask)
			}
			return
		}
	}
	s.have, s.best = true, q
	s.ties = append(s.ties[:0], p.mask)
}

// dfs enumerates every way to complete p from cand[from:], in lowest-position
// order, pruning refPartial sets whose best possible completion ranks below the
// best set found (or equal to it, once maxTies sets tie).
func (s *refSearcher) dfs(p refPartial, from int) {
	need := s.k - p.count
	if need == 0 {
		s.leaf(p)
		return
	}
	n := s.a.n
	conn, far := s.conn[p.count*n:(p.count+1)*n], s.far[p.count*n:(p.count+1)*n]
	if s.have {
		opt := p.refQuality()
		if s.k >= 2 {
			opt.MinNVLinks = min(opt.MinNVLinks, s.a.maxNV)
		}
		opt.NVLinks = s.nvBound(p, from, conn)
		opt.PCIe = max(opt.PCIe, s.pathBound(from, need, far))
		if c := opt.Compare(s.best); c < 0 || (c == 0 && len(s.ties) >= s.maxTies) {
			return
		}
	}
	next, nextFar := s.conn[(p.count+1)*n:(p.count+2)*n], s.far[(p.count+1)*n:(p.count+2)*n]
	for i := from; i <= len(s.cand)-need; i++ {
		c := s.cand[i]
		row, prow := s.a.nv[c*n:(c+1)*n], s.a.path[c*n:(c+1)*n]
		for j := range next {
			next[j] = conn[j] + row[j]
			nextFar[j] = max(far[j], prow[j])
		}
		s.dfs(s.a.refAdd(p, c), i+1)
	}
}

// nvBound bounds the total NVLink count of any completion of p with
// candidates from cand[from:]. Twice the total is the sum over the final
// set's members of their links to the other members; a member already in p
// can gain at most its r largest link counts, and no more than the links it
// has left (deg minus those into p); a new member has at most its links into
// p plus its r-1 largest, and no more than deg. conn[j] is j's NVLink count to p.
func (s *refSearcher) nvBound(p refPartial, from int, conn []int) int {
	a, n, r := s.a, s.a.n, s.k-p.count
	twice := 2 * p.sumNV
	for m := p.mask; m != 0; m &= m - 1 {
		d := bits.TrailingZeros64(m)
		twice += min(a.top[d*n+r], a.deg[d]-conn[d])
	}
	// The r largest new-member values, kept in descending order.
	top := s.topR[:0]
	for _, c := range s.cand[from:] {
		v := min(a.deg[c], conn[c]+a.top[c*n+r-1])
		if len(top) == r && v <= top[r-1] {
			continue
		}
		if len(top) < r {
			top = append(top, v)
		} else {
			top[r-1] = v
		}
		for i := len(top) - 1; i > 0 && top[i] > top[i-1]; i-- {
			top[i], top[i-1] = top[i-1], top[i]
		}
	}
	for _, v := range top {
		twice += v
	}
	return twice / 2
}

// pathBound is the closest worst PCIe path any completion can have: r more
// members are added, so the r-th closest candidate (by its farthest path to
// the refPartial set) is reached at best.
func (s *refSearcher) pathBound(from, r int, far []gpu.PCIePath) gpu.PCIePath {
	low := s.lowR[:0]
	for _, c := range s.cand[from:] {
		v := far[c]
		if len(low) == r && v >= low[r-1] {
			continue
		}
		if len(low) < r {
			low = append(low, v)
		} else {
			low[r-1] = v
		}
		for i := len(low) - 1; i > 0 && low[i] < low[i-1]; i-- {
			low[i], low[i-1] = low[i-1], low[i]
		}
	}
	return low[len(low)-1]
}

// greedy grows a set from every seed (the base itself when it is not empty,
// otherwise each candidate), each time adding the candidate that ranks best
// (lowest position on a tie), and records every result.
func (s *refSearcher) greedy(base refPartial) {
	seeds := []refPartial{base}
	if base.count == 0 {
		seeds = seeds[:0]
		for _, c := range s.cand {
			seeds = append(seeds, s.a.refAdd(base, c))
		}
	}
	for _, p := range seeds {
		for p.count < s.k {
			var next refPartial
			var nextQ Quality
			found := false
			for _, c := range s.cand {
				if p.mask&(1<<c) != 0 {
					continue
				}
				q := s.a.refAdd(p, c)
				if qq := q.refQuality(); !found || qq.Better(nextQ) {
					next, nextQ, found = q, qq, true
				}
			}
			p = next
		}
		s.leaf(p)
	}
}

// best returns the best k-set of free that contains must (both bit masks,
// must within free, k within bounds) and its quality. With maxTies > 1, up to
// maxTies sets that tie on quality are compared by what they leave free.
func (a *Allocator) refBest(free, must uint64, k, maxTies int) (uint64, Quality) {
	base := refEmptyPartial()
	for m := must; m != 0; m &= m - 1 {
		base = a.refAdd(base, bits.TrailingZeros64(m))
	}
	s := refSearcher{a: a, cand: refPositions(free &^ must), k: k, maxTies: maxTies}
	if refCombinations(len(s.cand), k-base.count, a.limit) <= a.limit {
		n := a.n
		buf := make([]int, (k+1)*n+k)
		s.conn, s.topR = buf[:(k+1)*n], buf[(k+1)*n:]
		pbuf := make([]gpu.PCIePath, (k+1)*n+k)
		s.far, s.lowR = pbuf[:(k+1)*n], pbuf[(k+1)*n:]
		at := base.count * n
		for m := must; m != 0; m &= m - 1 {
			d := bits.TrailingZeros64(m)
			for j := range n {
				s.conn[at+j] += a.nv[d*n+j]
				s.far[at+j] = max(s.far[at+j], a.path[d*n+j])
			}
		}
		s.dfs(base, 0)
	} else {
		s.greedy(base)
	}
	if len(s.ties) == 1 {
		return s.ties[0], s.best
	}
	chosen := s.ties[0]
	left := a.refLeftover(free&^chosen, k)
	for _, t := range s.ties[1:] {
		l := a.refLeftover(free&^t, k)
		if c := refCompareLeftover(l, left); c > 0 || (c == 0 && refLexLess(t, chosen)) {
			chosen, left = t, l
		}
	}
	return chosen, s.best
}

// leftover simulates the next requests on the GPUs rest: for each look-ahead
// size m (and k), largest first, the qualities of the best m-sets taken one
// after another until fewer than m GPUs remain.
func (a *Allocator) refLeftover(rest uint64, k int) [][]Quality {
	sizes := a.lookahead
	if k >= 2 && !slices.Contains(sizes, k) {
		sizes = append(slices.Clone(sizes), k)
		slices.SortFunc(sizes, func(x, y int) int { return y - x })
	}
	out := make([][]Quality, 0, len(sizes))
	for _, m := range sizes {
		var seq []Quality
		for r := rest; bits.OnesCount64(r) >= m; {
			set, q := a.refBest(r, 0, m, 1)
			seq = append(seq, q)
			r &^= set
		}
		out = append(out, seq)
	}
	return out
}

// compareLeftover compares two leftovers size by size, each best set first;
// positive when x leaves the better sets.
func refCompareLeftover(x, y [][]Quality) int {
	for i := range min(len(x), len(y)) {
		for j := range min(len(x[i]), len(y[i])) {
			if c := x[i][j].Compare(y[i][j]); c != 0 {
				return c
			}
		}
		if c := len(x[i]) - len(y[i]); c != 0 {
			return c
		}
	}
	return 0
}

// lexLess reports whether set x, as a sorted list of positions, comes before
// set y of the same size.
func refLexLess(x, y uint64) bool {
	d := x ^ y
	return d != 0 && x&(d&-d) != 0
}

// combinations returns C(n, r), or limit+1 once it exceeds limit.
func refCombinations(n, r, limit int) int {
	if r < 0 || r > n {
		return 0
	}
	r = min(r, n-r)
	c := 1
	for i := range r {
		if c > math.MaxInt/n {
			return limit + 1
		}
		c = c * (n - i) / (i + 1)
		if c > limit {
			return limit + 1
		}
	}
	return c
}

// The MIG slice choice as it was before it was made allocation-free.

// PickMIGDevice returns the GPU (its position in gpus) and the free slice to
// serve a request for one slice of a profile, packing: the GPU with the fewest
// free memory slices first, so that emptier GPUs stay whole; then the slice
// PickMIGSlice would choose, by what it leaves of that GPU; then the lowest
// GPU position.
//
// It fails as PickMIGSlice does, naming the GPU, and with an error wrapping
// ErrInsufficient when no GPU has a free slice.
func refPickMIGDevice(gpus []MIGGPU) (int, gpu.Placement, error) {
	best, bestGPU := refMIGChoice{free: -1}, -1
	for i, g := range gpus {
		c, err := refChoose(g)
		if err != nil {
			return 0, gpu.Placement{}, fmt.Errorf("gpu %d: %w", i, err)
		}
		if c.free == -1 {
			continue
		}
		if bestGPU < 0 || c.refBetterAcrossGPUs(best) {
			best, bestGPU = c, i
		}
	}
	if bestGPU < 0 {
		return 0, gpu.Placement{}, fmt.Errorf("no free mig slice of the requested profile on any of %d gpus: %w", len(gpus), ErrInsufficient)
	}
	return bestGPU, gpus[bestGPU].Free[best.free], nil
}

// refMIGChoice is the best free slice of one GPU.
type refMIGChoice struct {
	free      int   // index into Free; -1 when there is none
	freeCount int   // free memory slices before the choice
	capacity  []int // instances placeable afterwards, per profile, largest profile first
}

func (c refMIGChoice) refBetterAcrossGPUs(o refMIGChoice) bool {
	if c.freeCount != o.freeCount {
		return c.freeCount < o.freeCount
	}
	return slices.Compare(c.capacity, o.capacity) > 0
}

// choose validates g and finds its best free slice.
func refChoose(g MIGGPU) (refMIGChoice, error) {
	if len(g.Profiles) == 0 {
		return refMIGChoice{}, errors.New("gpu has no mig profiles")
	}
	total := 0
	for _, p := range g.Profiles {
		for _, pl := range p.Placements {
			if pl.Start < 0 || pl.Size < 1 {
				return refMIGChoice{}, fmt.Errorf("mig profile %s has placement %s, want start >= 0 and size >= 1", p.Name, pl)
			}
			total = max(total, pl.Start+pl.Size)
		}
	}
	if total > 64 {
		return refMIGChoice{}, fmt.Errorf("mig geometry spans %d memory slices, at most 64 are supported", total)
	}
	span := func(pl gpu.Placement, what string) (uint64, error) {
		if pl.Start < 0 || pl.Size < 1 || pl.Start+pl.Size > total {
			return 0, fmt.Errorf("%s slice %s is outside the gpu's memory slices 0 to %d", what, pl, total-1)
		}
		return (uint64(1)<<pl.Size - 1) << pl.Start, nil
	}
	var used uint64
	for _, pl := range g.Used {
		m, err := span(pl, "used")
		if err != nil {
			return refMIGChoice{}, err
		}
		used |= m
	}
	masks := make([]uint64, len(g.Free))
	for i, pl := range g.Free {
		m, err := span(pl, "free")
		if err != nil {
			return refMIGChoice{}, err
		}
		if m&used != 0 {
			return refMIGChoice{}, fmt.Errorf("free slice %s overlaps a used slice (used: %s)", pl, placementList(g.Used))
		}
		for j := range i {
			if m&masks[j] != 0 {
				return refMIGChoice{}, fmt.Errorf("free slices %s and %s overlap", g.Free[j], pl)
			}
		}
		masks[i] = m
	}
	all := uint64(1)<<total - 1
	geometry := refNewMIGGeometry(g.Profiles)
	best := refMIGChoice{free: -1, freeCount: bits.OnesCount64(all &^ used)}
	var scratch []int
	for i, m := range masks {
		scratch = geometry.refCapacity(all&^used&^m, scratch[:0])
		c := 0
		if best.free >= 0 {
			c = slices.Compare(scratch, best.capacity)
		}
		if best.free < 0 || c > 0 || (c == 0 && g.Free[i].Start < g.Free[best.free].Start) {
			best.free = i
			best.capacity, scratch = scratch, best.capacity
		}
	}
	return best, nil
}

// refMIGGeometry is a GPU's profiles, largest first (by slice count, then name),
// each with its placements as memory-slice masks, earliest-ending first.
type refMIGGeometry struct {
	masks [][]uint64
	max   []int
}

func refNewMIGGeometry(profiles []gpu.MIGProfileInfo) refMIGGeometry {
	order := make([]int, len(profiles))
	count := 0
	for i, p := range profiles {
		order[i] = i
		count += len(p.Placements)
	}
	slices.SortStableFunc(order, func(x, y int) int {
		if c := cmp.Compare(profiles[y].SliceCount, profiles[x].SliceCount); c != 0 {
			return c
		}
		return strings.Compare(profiles[x].Name, profiles[y].Name)
	})
	g := refMIGGeometry{masks: make([][]uint64, len(profiles)), max: make([]int, len(profiles))}
	flat := make([]uint64, 0, count)
	for i, pi := range order {
		p := &profiles[pi]
		start := len(flat)
		for _, pl := range p.Placements {
			flat = append(flat, (uint64(1)<<pl.Size-1)<<pl.Start)
		}
		g.masks[i] = flat[start:len(flat):len(flat)]
		slices.SortFunc(g.masks[i], func(x, y uint64) int { return cmp.Compare(bits.Len64(x), bits.Len64(y)) })
		g.max[i] = p.MaxInstances
	}
	return g
}

// capacity appends to out, per profile, how many instances fit at once in the
// free memory slices: earliest-ending placements first, which is optimal for
// intervals, capped at the profile's MaxInstances.
func (g refMIGGeometry) refCapacity(free uint64, out []int) []int {
	for i, masks := range g.masks {
		count, left := 0, free
		for _, m := range masks {
			if g.max[i] > 0 && count >= g.max[i] {
				break
			}
			if left&m == m {
				count++
				left &^= m
			}
		}
		out = append(out, count)
	}
	return out
}

// refAllocate is Allocate on the reference search.
func (a *Allocator) refAllocate(free, must []int, k int) ([]int, error) {
	freeMask, mustMask, err := a.request(free, must, k)
	if err != nil {
		return nil, err
	}
	set, _ := a.refBest(freeMask, mustMask, k, MaxTieCandidates)
	return refPositions(set), nil
}

// refTopology is a random machine of n GPUs. Link values are drawn from few
// choices so that many sets tie, the case the look-ahead decides: an
// all-to-all fabric, NVLink-bridged pairs or random NVLink counts, PCIe
// switches grouping neighbours, and two NUMA nodes or unknown ones.
func refTopology(rng *rand.Rand, n int) (gpu.Topology, []int) {
	t := gpu.NewTopology(n)
	numa := make([]int, n)
	split := rng.IntN(3)
	for i := range numa {
		switch split {
		case 0:
			numa[i] = 2 * i / n
		case 1:
			numa[i] = -1
		default:
			numa[i] = rng.IntN(3) - 1
		}
	}
	style := rng.IntN(4)
	group := 1 + rng.IntN(4)
	for i := range n {
		for j := i + 1; j < n; j++ {
			l := gpu.Link{PCIe: gpu.PathCrossCPU}
			if numa[i] == numa[j] {
				l.PCIe = gpu.PathSameCPU
			}
			if i/group == j/group {
				l.PCIe = gpu.PathSingleSwitch
			} else if i/(2*group) == j/(2*group) && rng.IntN(2) == 0 {
				l.PCIe = gpu.PathMultiSwitch
			}
			switch style {
			case 0: // NVSwitch fabric
				l.NVLinks, l.NVSwitch = 18, true
			case 1: // NVLink bridges between pairs
				if i/2 == j/2 {
					l.NVLinks = 12
				}
			case 2: // irregular
				if rng.IntN(2) == 0 {
					l.NVLinks = 2 * rng.IntN(4)
				}
				l.PCIe = gpu.PCIePath(1 + rng.IntN(int(gpu.PathUnknown)))
			}
			t.Set(i, j, l)
		}
	}
	return t, numa
}

// TestAllocateMatchesReference checks that the optimised search returns
// exactly the set, and the quality, of the search it replaced, on random
// machines, free sets, mustInclude sets, look-ahead sizes and search limits
// (small limits exercise the greedy search).
func TestAllocateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	sizes := []int{2, 3, 4, 5, 6, 7, 8, 8, 8, 9, 10, 12, 16}
	for i := range 3000 {
		n := sizes[rng.IntN(len(sizes))]
		topo, numa := refTopology(rng, n)
		var opts []Option
		if rng.IntN(4) == 0 {
			var la []int
			for range rng.IntN(4) {
				la = append(la, rng.IntN(n+2))
			}
			opts = append(opts, WithLookahead(la...))
		}
		if rng.IntN(5) == 0 {
			opts = append(opts, WithSearchLimit(1+rng.IntN(200)))
		}
		a, err := New(topo, numa, opts...)
		if err != nil {
			t.Fatal(err)
		}
		var free []int
		for p := range n {
			if rng.IntN(5) > 0 {
				free = append(free, p)
			}
		}
		if len(free) == 0 {
			continue
		}
		k := 1 + rng.IntN(len(free))
		if n == 16 {
			k = min(k, 4) // keep the reference's eager look-ahead affordable
		}
		var must []int
		for _, p := range free {
			if len(must) < k && rng.IntN(8) == 0 {
				must = append(must, p)
			}
		}
		want, err := a.refAllocate(free, must, k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Allocate(free, must, k)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("case %d: n=%d numa=%v opts=%d: Allocate(%v, %v, %d) = %v, %v; the reference chooses %v",
				i, n, numa, len(opts), free, must, k, got, err, want)
		}
		fm, mm, _ := a.request(free, must, k)
		_, wantQ := a.refBest(fm, mm, k, 1)
		if q, err := a.BestQuality(free, must, k); err != nil || q != wantQ.public() {
			t.Fatalf("case %d: BestQuality(%v, %v, %d) = %v, %v; the reference finds %v", i, free, must, k, q, err, wantQ.public())
		}
		if set, q, err := a.AllocateQuality(free, must, k); err != nil || !slices.Equal(set, want) || q != wantQ.public() {
			t.Fatalf("case %d: AllocateQuality(%v, %v, %d) = %v, %v, %v; want %v, %v", i, free, must, k, set, q, err, want, wantQ.public())
		}
		// Offers, against thresholds around the best k-set of free and the
		// quality of random k-sets.
		_, bestQ := a.refBest(fm, 0, k, 1)
		bestQ = bestQ.public()
		thresholds := []Quality{bestQ}
		for _, d := range []Quality{{MinNVLinks: 1}, {NVLinks: 1}, {PCIe: -1}, {NUMANodes: -1}, {NVLinks: -1}, {PCIe: 1}} {
			q := bestQ
			q.MinNVLinks += d.MinNVLinks
			q.NVLinks += d.NVLinks
			q.PCIe += d.PCIe
			q.NUMANodes += d.NUMANodes
			thresholds = append(thresholds, q)
		}
		perm := rng.Perm(len(free))
		set := make([]int, k)
		for j := range k {
			set[j] = free[perm[j]]
		}
		q, err := a.Quality(set)
		if err != nil {
			t.Fatal(err)
		}
		thresholds = append(thresholds, q)
		for _, q := range thresholds {
			want := bestQ.Compare(q) >= 0
			if got, err := a.Offers(free, k, q); err != nil || got != want {
				t.Fatalf("case %d: Offers(%v, %d, %v) = %v, %v; the best set is %v", i, free, k, q, got, err, bestQ)
			}
		}
	}
}

// TestPickMIGDeviceMatchesReference checks PickMIGDevice against the choice
// it replaced on random layouts of H100s and of a made-up geometry with more
// profiles, including inconsistent ones (the errors must match too).
func TestPickMIGDeviceMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	aligned := func(size, limit, total int) []gpu.Placement {
		var out []gpu.Placement
		for s := 0; s < limit && s+size <= total; s += size {
			out = append(out, gpu.Placement{Start: s, Size: size})
		}
		return out
	}
	h100 := []gpu.MIGProfileInfo{
		{Name: "1g.10gb", SliceCount: 1, MaxInstances: 7, Placements: aligned(1, 7, 8)},
		{Name: "1g.10gb+me", SliceCount: 1, MaxInstances: 1, Placements: aligned(1, 7, 8)},
		{Name: "1g.20gb", SliceCount: 1, MaxInstances: 4, Placements: aligned(2, 8, 8)},
		{Name: "2g.20gb", SliceCount: 2, MaxInstances: 3, Placements: aligned(2, 6, 8)},
		{Name: "3g.40gb", SliceCount: 3, MaxInstances: 2, Placements: aligned(4, 8, 8)},
		{Name: "4g.40gb", SliceCount: 4, MaxInstances: 1, Placements: aligned(4, 4, 8)},
		{Name: "7g.80gb", SliceCount: 7, MaxInstances: 1, Placements: aligned(8, 8, 8)},
	}
	var wide []gpu.MIGProfileInfo // 20 profiles over 40 memory slices
	for i := range 20 {
		size := 1 + i%5
		wide = append(wide, gpu.MIGProfileInfo{Name: fmt.Sprintf("p%02d", 19-i), SliceCount: size, MaxInstances: rng.IntN(9), Placements: aligned(size, 40, 40)})
	}
	for i := range 3000 {
		profiles, total := h100, 8
		if rng.IntN(4) == 0 {
			profiles, total = wide, 40
		}
		var gpus []MIGGPU
		for range 1 + rng.IntN(8) {
			g := MIGGPU{Profiles: profiles}
			// Cut the GPU into random slices of random profiles.
			for at := 0; at < total; {
				size := 1 + rng.IntN(min(4, total-at))
				pl := gpu.Placement{Start: at, Size: size}
				switch rng.IntN(4) {
				case 0:
					g.Used = append(g.Used, pl)
				case 1, 2:
					g.Free = append(g.Free, pl)
				}
				at += size
			}
			if rng.IntN(50) == 0 { // an inconsistent layout
				g.Free = append(g.Free, gpu.Placement{Start: rng.IntN(total + 2), Size: 1})
			}
			gpus = append(gpus, g)
		}
		wantGPU, want, wantErr := refPickMIGDevice(gpus)
		gotGPU, got, err := PickMIGDevice(gpus)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || (err == nil && (gotGPU != wantGPU || got != want)) {
			t.Fatalf("case %d: PickMIGDevice = %d, %v, %v; the reference chooses %d, %v, %v", i, gotGPU, got, err, wantGPU, want, wantErr)
		}
		for j, g := range gpus {
			want, wantErr := refChoose(g)
			got, err := PickMIGSlice(g)
			switch {
			case wantErr != nil:
				if fmt.Sprint(err) != wantErr.Error() {
					t.Fatalf("case %d gpu %d: PickMIGSlice error %v, the reference %v", i, j, err, wantErr)
				}
			case want.free == -1:
				if !errors.Is(err, ErrInsufficient) {
					t.Fatalf("case %d gpu %d: PickMIGSlice = %v, %v; the reference finds no free slice", i, j, got, err)
				}
			case err != nil || got != g.Free[want.free]:
				t.Fatalf("case %d gpu %d: PickMIGSlice = %v, %v; the reference chooses %v", i, j, got, err, g.Free[want.free])
			}
		}
	}
}
