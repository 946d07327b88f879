package topology

// The allocator's search as it was before it was optimised (branch and bound
// over position slices, eager look-ahead of every tie), kept verbatim as the
// reference that TestAllocateMatchesReference compares the search against.

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
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
	}
}
