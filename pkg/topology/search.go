package topology

import (
	"math"
	"math/bits"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// partial is a set being grown, with its quality kept incrementally.
type partial struct {
	mask  uint64
	count int
	minNV int // noPairs until the set has a pair
	sumNV int
	path  gpu.PCIePath
	numa  uint64
}

func emptyPartial() partial { return partial{minNV: noPairs, path: gpu.PathSame} }

// add returns p with device d added.
func (a *Allocator) add(p partial, d int) partial {
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

func (p partial) quality() Quality {
	return Quality{
		Size:       p.count,
		MinNVLinks: p.minNV,
		NVLinks:    p.sumNV,
		PCIe:       p.path,
		NUMANodes:  bits.OnesCount64(p.numa),
	}
}

// searcher finds the best k-sets that extend a base set with candidates.
type searcher struct {
	a       *Allocator
	cand    []int // candidate positions, ascending
	k       int
	maxTies int
	have    bool
	best    Quality
	ties    []uint64 // sets of quality best, at most maxTies, in the order found
	// conn[t*n+j] is device j's NVLink count to the partial set of size t
	// on the current search path, far[t*n+j] its farthest PCIe path to it.
	conn []int          // (k+1)×n
	far  []gpu.PCIePath // (k+1)×n
	topR []int          // scratch for the bounds
	lowR []gpu.PCIePath
}

// leaf records a complete set.
func (s *searcher) leaf(p partial) {
	q := p.quality()
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
// order, pruning partial sets whose best possible completion ranks below the
// best set found (or equal to it, once maxTies sets tie).
func (s *searcher) dfs(p partial, from int) {
	need := s.k - p.count
	if need == 0 {
		s.leaf(p)
		return
	}
	n := s.a.n
	conn, far := s.conn[p.count*n:(p.count+1)*n], s.far[p.count*n:(p.count+1)*n]
	if s.have {
		opt := p.quality()
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
		s.dfs(s.a.add(p, c), i+1)
	}
}

// nvBound bounds the total NVLink count of any completion of p with
// candidates from cand[from:]. Twice the total is the sum over the final
// set's members of their links to the other members; a member already in p
// can gain at most its r largest link counts, and no more than the links it
// has left (deg minus those into p); a new member has at most its links into
// p plus its r-1 largest, and no more than deg. conn[j] is j's NVLink count to p.
func (s *searcher) nvBound(p partial, from int, conn []int) int {
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
// the partial set) is reached at best.
func (s *searcher) pathBound(from, r int, far []gpu.PCIePath) gpu.PCIePath {
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
func (s *searcher) greedy(base partial) {
	seeds := []partial{base}
	if base.count == 0 {
		seeds = seeds[:0]
		for _, c := range s.cand {
			seeds = append(seeds, s.a.add(base, c))
		}
	}
	for _, p := range seeds {
		for p.count < s.k {
			var next partial
			var nextQ Quality
			found := false
			for _, c := range s.cand {
				if p.mask&(1<<c) != 0 {
					continue
				}
				q := s.a.add(p, c)
				if qq := q.quality(); !found || qq.Better(nextQ) {
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
func (a *Allocator) best(free, must uint64, k, maxTies int) (uint64, Quality) {
	base := emptyPartial()
	for m := must; m != 0; m &= m - 1 {
		base = a.add(base, bits.TrailingZeros64(m))
	}
	s := searcher{a: a, cand: positions(free &^ must), k: k, maxTies: maxTies}
	if combinations(len(s.cand), k-base.count, a.limit) <= a.limit {
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
	left := a.leftover(free&^chosen, k)
	for _, t := range s.ties[1:] {
		l := a.leftover(free&^t, k)
		if c := compareLeftover(l, left); c > 0 || (c == 0 && lexLess(t, chosen)) {
			chosen, left = t, l
		}
	}
	return chosen, s.best
}

// leftover simulates the next requests on the GPUs rest: for each look-ahead
// size m (and k), largest first, the qualities of the best m-sets taken one
// after another until fewer than m GPUs remain.
func (a *Allocator) leftover(rest uint64, k int) [][]Quality {
	sizes := a.lookahead
	if k >= 2 && !slices.Contains(sizes, k) {
		sizes = append(slices.Clone(sizes), k)
		slices.SortFunc(sizes, func(x, y int) int { return y - x })
	}
	out := make([][]Quality, 0, len(sizes))
	for _, m := range sizes {
		var seq []Quality
		for r := rest; bits.OnesCount64(r) >= m; {
			set, q := a.best(r, 0, m, 1)
			seq = append(seq, q)
			r &^= set
		}
		out = append(out, seq)
	}
	return out
}

// compareLeftover compares two leftovers size by size, each best set first;
// positive when x leaves the better sets.
func compareLeftover(x, y [][]Quality) int {
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
func lexLess(x, y uint64) bool {
	d := x ^ y
	return d != 0 && x&(d&-d) != 0
}

// combinations returns C(n, r), or limit+1 once it exceeds limit.
func combinations(n, r, limit int) int {
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
