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

// stackFar is the size of the per-level PCIe scratch kept on the stack: it
// covers every request on a node of up to 16 GPUs but the largest.
const stackFar = 16 * 12

// work is the scratch memory of one Allocate or BestQuality call, shared by
// the searches it runs one after another (the main search, then those of the
// look-ahead). It lives on the caller's stack.
type work struct {
	// conn[j] is device j's NVLink count to the partial set on the current
	// search path, kept by adding and removing rows as the path changes.
	conn [MaxDevices]int
	// far[t*n+j] is device j's farthest PCIe path to the partial set of size
	// t on the current search path: farStack, or farHeap for large requests.
	farStack [stackFar]gpu.PCIePath
	farHeap  []gpu.PCIePath
	top      [MaxDevices]int // scratch for nvBound
	low      [MaxDevices]gpu.PCIePath
}

// farRows returns the per-level PCIe scratch for sets of k of n devices,
// zeroed.
func (w *work) farRows(n, k int) []gpu.PCIePath {
	size := (k + 1) * n
	var far []gpu.PCIePath
	switch {
	case size <= len(w.farStack):
		far = w.farStack[:size]
	case size <= cap(w.farHeap):
		far = w.farHeap[:size]
	default:
		w.farHeap = make([]gpu.PCIePath, size)
		return w.farHeap
	}
	clear(far)
	return far
}

// searcher finds the best k-sets that extend a base set with candidates.
type searcher struct {
	a     *Allocator
	w     *work
	k     int
	have  bool
	best  Quality
	ties  []uint64 // sets of quality best, the first nties of them, in the order found
	nties int
	far   []gpu.PCIePath
	cand  []int // candidate positions, ascending (greedy search only)
	// first stops the search at the first set found (searching from a
	// threshold); stop says it was.
	first, stop bool
}

// leaf records a complete set found by the greedy search, which may find a
// set twice.
func (s *searcher) leaf(p partial) {
	q := p.quality()
	if s.have {
		c := q.Compare(s.best)
		if c < 0 {
			return
		}
		if c == 0 {
			if s.nties < len(s.ties) && !slices.Contains(s.ties[:s.nties], p.mask) {
				s.ties[s.nties] = p.mask
				s.nties++
			}
			return
		}
	}
	s.have, s.best = true, q
	s.ties[0], s.nties = p.mask, 1
}

// found records a complete set found by dfs, which finds each set once, of
// the quality given by its fields (passed apart: copying Qualities in the
// innermost loop is slow).
func (s *searcher) found(mask uint64, minNV, nv int, path gpu.PCIePath, numa int) {
	if s.have {
		b := &s.best
		better := false
		switch {
		case minNV != b.MinNVLinks:
			better = minNV > b.MinNVLinks
		case nv != b.NVLinks:
			better = nv > b.NVLinks
		case path != b.PCIe:
			better = path < b.PCIe
		case numa != b.NUMANodes:
			better = numa < b.NUMANodes
		default:
			if s.nties < len(s.ties) {
				s.ties[s.nties] = mask
				s.nties++
				s.stop = s.first
			}
			return
		}
		if !better {
			return
		}
	}
	s.have = true
	s.best.Size, s.best.MinNVLinks, s.best.NVLinks, s.best.PCIe, s.best.NUMANodes = s.k, minNV, nv, path, numa
	s.ties[0], s.nties = mask, 1
	s.stop = s.first
}

// dfs enumerates every way to complete p (at least one device short of k)
// from the candidates rem, in lowest-position order, pruning partial sets
// whose best possible completion ranks below the best set found (or equal to
// it, once maxTies sets tie). s.w.conn holds the NVLink counts to p.
func (s *searcher) dfs(p partial, rem uint64) {
	need := s.k - p.count
	if s.have && !s.promising(p, rem, need) {
		return
	}
	a, n := s.a, s.a.n
	if a.uniform {
		s.dfsUniform(p, rem, need)
		return
	}
	conn := &s.w.conn
	far := s.far[p.count*n : (p.count+1)*n]
	if need == 1 {
		numa := p.numa
		for m := rem; m != 0; m &= m - 1 {
			c := bits.TrailingZeros64(m)
			minNV := p.minNV
			row := a.nv[c*n : (c+1)*n]
			for pm := p.mask; pm != 0; pm &= pm - 1 {
				minNV = min(minNV, row[bits.TrailingZeros64(pm)])
			}
			s.found(p.mask|1<<c, minNV, p.sumNV+conn[c], max(p.path, far[c]), bits.OnesCount64(numa|a.numa[c]))
			if s.stop {
				return
			}
		}
		return
	}
	next := s.far[(p.count+1)*n : (p.count+2)*n]
	for m := rem; bits.OnesCount64(m) >= need; {
		c := bits.TrailingZeros64(m)
		m &= m - 1
		row, prow := a.nv[c*n:(c+1)*n], a.path[c*n:(c+1)*n]
		q := partial{
			mask:  p.mask | 1<<c,
			count: p.count + 1,
			minNV: p.minNV,
			sumNV: p.sumNV + conn[c],
			path:  max(p.path, far[c]),
			numa:  p.numa | a.numa[c],
		}
		for pm := p.mask; pm != 0; pm &= pm - 1 {
			q.minNV = min(q.minNV, row[bits.TrailingZeros64(pm)])
		}
		for j := range n {
			conn[j] += row[j]
			next[j] = max(far[j], prow[j])
		}
		s.dfs(q, m)
		if s.stop {
			return
		}
		for j := range n {
			conn[j] -= row[j]
		}
	}
}

// dfsUniform is dfs on a node whose every pair of GPUs has the same NVLink
// count (an NVSwitch fabric, or no NVLink at all): a set's weakest pair and
// NVLink total follow from its size, so only the PCIe paths are tracked.
func (s *searcher) dfsUniform(p partial, rem uint64, need int) {
	a, n := s.a, s.a.n
	far := s.far[p.count*n : (p.count+1)*n]
	// What each GPU added to p brings: its links to p's members.
	minNV, sumNV := p.minNV, p.sumNV+a.maxNV*p.count
	if p.count > 0 {
		minNV = min(minNV, a.maxNV)
	}
	if need == 1 {
		for m := rem; m != 0; m &= m - 1 {
			c := bits.TrailingZeros64(m)
			s.found(p.mask|1<<c, minNV, sumNV, max(p.path, far[c]), bits.OnesCount64(p.numa|a.numa[c]))
			if s.stop {
				return
			}
		}
		return
	}
	next := s.far[(p.count+1)*n : (p.count+2)*n]
	for m := rem; bits.OnesCount64(m) >= need; {
		c := bits.TrailingZeros64(m)
		m &= m - 1
		prow := a.path[c*n : (c+1)*n]
		for j := range n {
			next[j] = max(far[j], prow[j])
		}
		s.dfs(partial{
			mask:  p.mask | 1<<c,
			count: p.count + 1,
			minNV: minNV,
			sumNV: sumNV,
			path:  max(p.path, far[c]),
			numa:  p.numa | a.numa[c],
		}, m)
		if s.stop {
			return
		}
	}
}

// promising reports whether a completion of p (need devices short) with
// candidates from rem may still rank above the best set found, or equal to it
// while fewer than maxTies sets tie. It compares an optimistic bound on the
// completion's quality with the best, criterion by criterion, computing each
// bound only when the criteria before it are equal.
func (s *searcher) promising(p partial, rem uint64, need int) bool {
	b := &s.best
	minNV := p.minNV
	if s.k >= 2 {
		minNV = min(minNV, s.a.maxNV)
	}
	if minNV != b.MinNVLinks {
		return minNV > b.MinNVLinks
	}
	var nv int
	if s.a.uniform {
		nv = s.a.maxNV * s.k * (s.k - 1) / 2 // every k-set's
	} else {
		nv = s.nvBound(p, rem, need)
	}
	if nv != b.NVLinks {
		return nv > b.NVLinks
	}
	if path := max(p.path, s.pathBound(p.count, rem, need)); path != b.PCIe {
		return path < b.PCIe
	}
	if numa := bits.OnesCount64(p.numa); numa != b.NUMANodes {
		return numa < b.NUMANodes
	}
	return s.nties < len(s.ties)
}

// nvBound bounds the total NVLink count of any completion of p with r more
// candidates from rem. Twice the total is the sum over the final set's
// members of their links to the other members; a member already in p can
// gain at most its r largest link counts, and no more than the links it has
// left (deg minus those into p); a new member has at most its links into p
// plus its r-1 largest, and no more than deg.
func (s *searcher) nvBound(p partial, rem uint64, r int) int {
	a, n, conn := s.a, s.a.n, &s.w.conn
	twice := 2 * p.sumNV
	for m := p.mask; m != 0; m &= m - 1 {
		d := bits.TrailingZeros64(m)
		twice += min(a.top[d*n+r], a.deg[d]-conn[d])
	}
	// The r largest new-member values, kept in descending order.
	top, size := &s.w.top, 0
	for m := rem; m != 0; m &= m - 1 {
		c := bits.TrailingZeros64(m)
		v := min(a.deg[c], conn[c]+a.top[c*n+r-1])
		i := size
		if size == r {
			if v <= top[r-1] {
				continue
			}
			i = r - 1
		} else {
			size++
		}
		for ; i > 0 && v > top[i-1]; i-- {
			top[i] = top[i-1]
		}
		top[i] = v
	}
	for _, v := range top[:size] {
		twice += v
	}
	return twice / 2
}

// pathBound is the closest worst PCIe path any completion of the partial set
// of size t can have: r more members come from rem, so the r-th closest
// candidate (by its farthest path to the partial set) is reached at best.
func (s *searcher) pathBound(t int, rem uint64, r int) gpu.PCIePath {
	n := s.a.n
	far := s.far[t*n : (t+1)*n]
	low, size := &s.w.low, 0
	for m := rem; m != 0; m &= m - 1 {
		v := far[bits.TrailingZeros64(m)]
		i := size
		if size == r {
			if v >= low[r-1] {
				continue
			}
			i = r - 1
		} else {
			size++
		}
		for ; i > 0 && v < low[i-1]; i-- {
			low[i] = low[i-1]
		}
		low[i] = v
	}
	return low[size-1]
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
// must within free, k within bounds) and its quality. With ties of a capacity
// above 1, up to that many sets that tie on quality are compared by what they
// leave free.
func (a *Allocator) best(free, must uint64, k int, ties []uint64, w *work) (uint64, Quality) {
	ties, q := a.search(free, must, k, ties, w)
	if len(ties) == 1 {
		return ties[0], q
	}
	return a.breakTie(ties, free, k, w), q
}

// search finds the best k-sets of free that contain must, up to cap(ties) of
// them in the order found, and their quality.
func (a *Allocator) search(free, must uint64, k int, ties []uint64, w *work) ([]uint64, Quality) {
	return a.searchFrom(free, must, k, ties, w, nil)
}

// searchFrom is search; with a threshold, it is an exhaustive search (k >= 2)
// for the first set that ranks at least as well, which it returns (no set
// when there is none).
func (a *Allocator) searchFrom(free, must uint64, k int, ties []uint64, w *work, threshold *Quality) ([]uint64, Quality) {
	base := emptyPartial()
	for m := must; m != 0; m &= m - 1 {
		base = a.add(base, bits.TrailingZeros64(m))
	}
	s := searcher{a: a, w: w, k: k, ties: ties[:cap(ties)]}
	if threshold != nil {
		s.have, s.best, s.first = true, *threshold, true
	}
	cand := free &^ must
	if combinations(bits.OnesCount64(cand), k-base.count, a.limit) > a.limit {
		s.cand = positions(cand)
		s.greedy(base)
	} else if base.count == k {
		s.found(base.mask, base.minNV, base.sumNV, base.path, bits.OnesCount64(base.numa))
	} else {
		n := a.n
		s.far = w.farRows(n, k)
		clear(w.conn[:n])
		at := s.far[base.count*n : (base.count+1)*n]
		for m := must; m != 0; m &= m - 1 {
			d := bits.TrailingZeros64(m)
			for j := range n {
				w.conn[j] += a.nv[d*n+j]
				at[j] = max(at[j], a.path[d*n+j])
			}
		}
		s.dfs(base, cand)
	}
	return s.ties[:s.nties], s.best
}

// breakTie returns the set of ties (sets of free that rank equal, in the
// order found) whose leftover is best: for each look-ahead size m (and k),
// largest first, the qualities of the best m-sets taken one after another
// from what the set leaves free, until fewer than m GPUs remain, compared
// size by size and each best set first; then the lowest positions. Every
// tie leaves as many GPUs free, so their leftovers have the same length; a
// tie's leftover is computed only as far as it takes to tell it from the
// best so far.
func (a *Allocator) breakTie(ties []uint64, free uint64, k int, w *work) uint64 {
	var sizesBuf [8]int
	sizes := append(sizesBuf[:0], a.lookahead...)
	if k >= 2 && !slices.Contains(sizes, k) {
		sizes = append(sizes, k)
		slices.SortFunc(sizes, func(x, y int) int { return y - x })
	}
	length, rest := 0, bits.OnesCount64(free)-k
	for _, m := range sizes {
		length += rest / m
	}
	var buf [2 * 16]Quality
	qs := buf[:]
	if 2*length > len(buf) {
		qs = make([]Quality, 2*length)
	}
	chosen := ties[0]
	cl := leftover{rest: free &^ chosen, r: free &^ chosen, q: qs[:length]}
	tl := leftover{q: qs[length : 2*length]}
	for _, t := range ties[1:] {
		tl = leftover{rest: free &^ t, r: free &^ t, q: tl.q}
		c := 0
		for j := range length {
			if j == cl.n {
				a.nextLeft(&cl, sizes, w)
			}
			a.nextLeft(&tl, sizes, w)
			if c = tl.q[j].Compare(cl.q[j]); c != 0 {
				break
			}
		}
		if c > 0 || (c == 0 && lexLess(t, chosen)) {
			chosen = t
			cl, tl = tl, cl
		}
	}
	return chosen
}

// leftover is a look-ahead sequence being generated.
type leftover struct {
	rest uint64    // the GPUs left free by the set
	i    int       // index of the look-ahead size being taken
	r    uint64    // the GPUs left for it
	q    []Quality // the sequence, its first n computed
	n    int
}

// nextLeft computes the next quality of l's sequence.
func (a *Allocator) nextLeft(l *leftover, sizes []int, w *work) {
	for bits.OnesCount64(l.r) < sizes[l.i] {
		l.i++
		l.r = l.rest
	}
	var one [1]uint64
	ties, q := a.search(l.r, 0, sizes[l.i], one[:], w)
	l.q[l.n] = q
	l.n++
	l.r &^= ties[0]
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
