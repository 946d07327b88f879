package replay

import (
	"container/heap"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// UpperBound bounds the final GPU allocation that any placement policy, even
// a clairvoyant one, can reach on one arrival order under the protocol (pods
// placed one at a time, never rejected while some node fits them, never
// leaving). Since every allocation sample is at most the final allocation, the
// bound also caps the allocation at any arrived demand, 130 % included (up to
// the curve's rounding: Discretize rounds samples and means to 0.01 %, so a
// curve value may exceed the bound by at most 0.01 pp).
//
// The argument. Take corners C_g = (cpu, memory) (BoundOptions.Corners). Let
// T_g be the arrival index of the last placed pod with G = 1000 (any K) whose
// CPU and memory are at least C_g's, or -1 when there is none. Its node had a
// whole free GPU, at least C_g's CPU and memory and room for one more pod at
// T_g, hence at every earlier arrival too (pods never leave). So every shared
// pod (K = 1, 0 < G < 1000) without a gpu_spec whose CPU and memory are at most
// some corner C_g's and that arrives before T_g found a node and was placed:
// it is forced. And no whole-GPU pod that dominates C_g and arrives after T_g
// was placed. At the end each GPU holds either one whole-GPU pod's share of a
// GPU (1000 milli) or a multiset of shared pods summing to at most 1000 milli.
// So for every run whose T vector lies in a box [a_g, b_g] (one interval of
// arrival indices per corner), the final used milli-GPU is at most the optimum
// of the configuration LP
//
//	maximise   Σ_c used_c·x_c + 1000·y
//	subject to Σ_c x_c + y ≤ #GPUs
//	           forced_j ≤ Σ_c n_cj·x_c ≤ arrivals_j   for each share size j
//	           0 ≤ y ≤ W,  x ≥ 0
//
// over configurations c (multisets of the arrived share sizes with sum ≤ 1000
// and at most as many pods of a size as arrived), where forced_j counts the
// forced pods of size j arriving before a_g for a corner g that dominates
// them, and W is Σ K over the whole-GPU pods allowed by b (for every corner the
// pod dominates, its index is at most b_g). CPU and memory per node, gpu_spec
// (except that pods with one are never forced) and the order of partners are
// relaxed away. An infeasible LP means that no run lies in the box.
//
// A best-first branch and bound over boxes makes the bound tight in T: it
// pops the box with the largest LP value, splits its widest interval (width =
// the demand arriving within it as a fraction of the GPU capacity; an interval
// that still holds -1 is split into {-1} and the rest first) and drops the
// halves whose LP is infeasible or whose intervals contradict T_g ≥ T_h when
// corner h dominates corner g. Every run lies in some box still on the heap,
// so the popped value bounds every run; the search stops when the popped box is
// no wider than BoundOptions.MinWidth.
//
// order is the arrival order (indices into t.Pods), as Arrivals returns it.
// Pods with K > 1 and G < 1000 are not covered by the argument and are an error.
func UpperBound(ctx context.Context, c *Cluster, t *Trace, order []int, opt BoundOptions) (BoundResult, error) {
	start := time.Now()
	if len(opt.Corners) == 0 {
		opt.Corners = DefaultBoundCorners
	}
	if len(opt.Corners) > 32 {
		return BoundResult{}, fmt.Errorf("bound corners: %d given, at most 32", len(opt.Corners))
	}
	if opt.MinWidth < 0 {
		return BoundResult{}, fmt.Errorf("bound min width %v: want 0 or more", opt.MinWidth)
	}
	m, err := newBoundModel(c, t, order, opt.Corners)
	if err != nil {
		return BoundResult{}, err
	}
	res := BoundResult{Capacity: m.capacity, Configurations: len(m.lp.configs)}
	if m.capacity == 0 {
		res.Box = m.fullBox()
		res.Wall = time.Since(start)
		return res, nil
	}

	val := func(b []BoundInterval) (float64, bool, error) {
		if err := ctx.Err(); err != nil {
			return 0, false, fmt.Errorf("bounding %s: %w", t.Name, err)
		}
		if opt.MaxLPs > 0 && res.LPs >= opt.MaxLPs {
			return 0, false, fmt.Errorf("bounding %s: more than %d LPs (--max-lps)", t.Name, opt.MaxLPs)
		}
		res.LPs++
		forced, whole := m.limits(b)
		out, err := m.lp.solve(forced, whole)
		if err != nil {
			return 0, false, fmt.Errorf("bounding %s, box %v: %w", t.Name, b, err)
		}
		if out.relaxed {
			res.Relaxed++
		}
		return out.value, !out.infeasible, nil
	}

	root := m.fullBox()
	v, ok, err := val(root)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, fmt.Errorf("bounding %s: the LP without forced pods is infeasible", t.Name)
	}
	h := &boxHeap{{value: v, box: root}}
	for h.Len() > 0 {
		top := heap.Pop(h).(boxItem)
		g, w := m.widest(top.box)
		if w <= opt.MinWidth {
			res.Used, res.Box = top.value, top.box
			res.Percent = 100 * top.value / float64(m.capacity)
			res.Wall = time.Since(start)
			return res, nil
		}
		for _, part := range split(top.box[g]) {
			nb := append([]BoundInterval(nil), top.box...)
			nb[g] = part
			if !m.ordered(nb) {
				continue
			}
			v, ok, err := val(nb)
			if err != nil {
				return res, err
			}
			if ok {
				heap.Push(h, boxItem{value: v, box: nb})
			}
		}
	}
	// A real run lies in some box, so an empty heap means the LPs are wrong.
	return res, fmt.Errorf("bounding %s: every box is infeasible, which no run allows", t.Name)
}

// BoundRun is UpperBound on one trace and seed.
type BoundRun struct {
	Trace string
	Seed  int64
	// Pods is the number of arrivals after tuning.
	Pods int
	BoundResult
}

// BoundSeeds runs UpperBound on the arrival order of each seed (Stream,
// Arrivals with tune), parallel at a time (at least 1); the runs come back in
// seed order, and done, when set, is called as each one finishes (from one
// goroutine at a time).
func BoundSeeds(ctx context.Context, c *Cluster, t *Trace, seeds []int64, tune float64, opt BoundOptions, parallel int, done func(BoundRun)) ([]BoundRun, error) {
	parallel = max(parallel, 1)
	runs := make([]BoundRun, len(seeds))
	errs := make([]error, len(seeds))
	var mu sync.Mutex
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, seed := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			order, _, _ := Arrivals(Stream(seed), t, c.TotalGPUMilli(), tune)
			res, err := UpperBound(ctx, c, t, order, opt)
			if err != nil {
				errs[i] = fmt.Errorf("seed %d: %w", seed, err)
				return
			}
			runs[i] = BoundRun{Trace: t.Name, Seed: seed, Pods: len(order), BoundResult: res}
			if done != nil {
				mu.Lock()
				done(runs[i])
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// Corner is a (CPU, memory) pod class of the bound's argument.
type Corner struct {
	CPU    int64 // milli-CPU
	Memory int64 // MiB
}

// DefaultBoundCorners are the corners used on the openb traces: the shape of
// most 810-milli pods of `default`, and two larger classes that force most other
// share sizes.
var DefaultBoundCorners = []Corner{{3152, 5600}, {8000, 30517}, {11908, 47104}}

// DefaultBoundMinWidth is the width (a fraction of the GPU capacity in arrived
// demand) at which the branch and bound stops splitting.
const DefaultBoundMinWidth = 0.0005

// BoundOptions are the settings of UpperBound.
type BoundOptions struct {
	// Corners are the classes of the argument (DefaultBoundCorners when empty).
	Corners []Corner
	// MinWidth stops the search once the best box is no wider than this, in
	// arrived demand as a fraction of the GPU capacity; 0 splits boxes down to
	// single arrivals (or intervals in which no GPU demand arrives).
	MinWidth float64
	// MaxLPs fails the search after this many LPs (0: no limit).
	MaxLPs int
}

// BoundInterval is the range [Lo, Hi] of arrival indices (positions in the
// arrival order) of one corner's T; -1 stands for "no such placement".
type BoundInterval struct {
	Lo, Hi int
}

func (iv BoundInterval) String() string { return fmt.Sprintf("[%d,%d]", iv.Lo, iv.Hi) }

// BoundResult is the outcome of UpperBound.
type BoundResult struct {
	// Used is the bound in milli-GPU, Percent the same as a percentage of
	// Capacity (milli-GPU of the cluster).
	Used     float64
	Percent  float64
	Capacity int64
	// Box is the box whose LP gave the bound, one interval per corner.
	Box []BoundInterval
	// LPs counts the LPs solved, Configurations the LP's configuration columns.
	LPs            int
	Configurations int
	// Relaxed counts LPs that the solver found infeasible without an exact
	// certificate; they were solved again without forced pods (a weaker but
	// still valid bound on that box) instead of being dropped.
	Relaxed int
	Wall    time.Duration
}

// boundModel is the data of the LPs for one arrival order.
type boundModel struct {
	corners  []Corner
	capacity int64
	n        int     // arrivals
	cum      []int64 // GPU demand arrived up to and including each arrival
	shares   []boundShare
	wholes   []boundWhole
	lp       *configLP
	// below[g] lists the corners h ≠ g that corner g dominates (T_h ≥ T_g).
	below [][]int
}

type boundShare struct {
	pos, size int
	corners   uint32 // corners whose CPU and memory are at least the pod's
}

type boundWhole struct {
	pos, k  int
	corners uint32 // corners the pod's CPU and memory dominate
}

func newBoundModel(c *Cluster, t *Trace, order []int, corners []Corner) (*boundModel, error) {
	m := &boundModel{corners: corners, capacity: c.TotalGPUMilli(), n: len(order), cum: make([]int64, len(order))}
	sizeIdx := map[int64]int{}
	var sizes []int64
	var arrivals []int
	var sum int64
	for pos, pi := range order {
		if pi < 0 || pi >= len(t.Pods) {
			return nil, fmt.Errorf("bounding %s: arrival %d is pod %d, out of range", t.Name, pos, pi)
		}
		p := &t.Pods[pi]
		sum += p.Demand()
		m.cum[pos] = sum
		switch {
		case p.G <= 0 || p.K == 0:
		case p.G == MilliPerGPU:
			w := boundWhole{pos: pos, k: p.K}
			for g, cr := range corners {
				if p.CPU >= cr.CPU && p.Memory >= cr.Memory {
					w.corners |= 1 << g
				}
			}
			m.wholes = append(m.wholes, w)
		case p.K == 1:
			j, ok := sizeIdx[p.G]
			if !ok {
				j = len(sizes)
				sizeIdx[p.G] = j
				sizes = append(sizes, p.G)
				arrivals = append(arrivals, 0)
			}
			arrivals[j]++
			s := boundShare{pos: pos, size: j}
			if p.Allowed == nil { // a pod with a gpu_spec may not fit the host: never forced
				for g, cr := range corners {
					if p.CPU <= cr.CPU && p.Memory <= cr.Memory {
						s.corners |= 1 << g
					}
				}
			}
			m.shares = append(m.shares, s)
		default:
			return nil, fmt.Errorf("bounding %s: pod %s (line %d) asks for %d GPUs of %d milli each; the bound covers only whole GPUs or a share of one",
				t.Name, p.Name, p.Line, p.K, p.G)
		}
	}
	// Sizes in decreasing order, as the reference implementation has them.
	byDesc := make([]int, len(sizes))
	for j := range byDesc {
		byDesc[j] = j
	}
	sort.Slice(byDesc, func(a, b int) bool { return sizes[byDesc[a]] > sizes[byDesc[b]] })
	rank := make([]int, len(sizes))
	sorted := make([]int64, len(sizes))
	counts := make([]int, len(sizes))
	for r, j := range byDesc {
		rank[j], sorted[r], counts[r] = r, sizes[j], arrivals[j]
	}
	for i := range m.shares {
		m.shares[i].size = rank[m.shares[i].size]
	}
	m.lp = newConfigLP(c.TotalGPUs(), sorted, counts)
	m.below = make([][]int, len(corners))
	for g, cg := range corners {
		for h, ch := range corners {
			if g != h && cg.CPU >= ch.CPU && cg.Memory >= ch.Memory {
				m.below[g] = append(m.below[g], h)
			}
		}
	}
	return m, nil
}

func (m *boundModel) fullBox() []BoundInterval {
	b := make([]BoundInterval, len(m.corners))
	for g := range b {
		b[g] = BoundInterval{-1, m.n - 1}
	}
	return b
}

// limits returns the forced pods per share size and the whole GPUs that may be
// placed for the runs in box b.
func (m *boundModel) limits(b []BoundInterval) (forced []int, whole int) {
	forced = make([]int, len(m.lp.sizes))
	var early uint32 // corners whose T is surely after the current arrival
	for _, s := range m.shares {
		early = 0
		for g := range b {
			if s.pos < b[g].Lo {
				early |= 1 << g
			}
		}
		if s.corners&early != 0 {
			forced[s.size]++
		}
	}
	for _, w := range m.wholes {
		ok := true
		for g := range b {
			if w.corners&(1<<g) != 0 && w.pos > b[g].Hi {
				ok = false
				break
			}
		}
		if ok {
			whole += w.k
		}
	}
	return forced, whole
}

// width is the demand arriving within iv as a fraction of the capacity; an
// interval holding -1 and some arrival counts as 1 so that it is split first.
func (m *boundModel) width(iv BoundInterval) float64 {
	switch {
	case iv.Hi <= iv.Lo:
		return 0
	case iv.Lo < 0:
		return 1
	}
	return float64(m.cum[iv.Hi]-m.cum[iv.Lo]) / float64(m.capacity)
}

// widest returns the first corner with the widest interval of b, and its width.
func (m *boundModel) widest(b []BoundInterval) (int, float64) {
	g, w := 0, -1.0
	for i, iv := range b {
		if x := m.width(iv); x > w {
			g, w = i, x
		}
	}
	return g, w
}

// split halves an interval; -1 goes alone first.
func split(iv BoundInterval) []BoundInterval {
	if iv.Lo < 0 {
		return []BoundInterval{{-1, -1}, {0, iv.Hi}}
	}
	mid := (iv.Lo + iv.Hi) / 2
	return []BoundInterval{{iv.Lo, mid}, {mid + 1, iv.Hi}}
}

// ordered reports whether b allows T_h ≥ T_g whenever corner g dominates
// corner h (a whole pod dominating g dominates h too).
func (m *boundModel) ordered(b []BoundInterval) bool {
	for g, hs := range m.below {
		for _, h := range hs {
			if b[h].Hi < b[g].Lo {
				return false
			}
		}
	}
	return true
}

type boxItem struct {
	value float64
	box   []BoundInterval
}

// boxHeap is a max-heap on value; equal values go to the lexicographically
// smallest box, so the search is deterministic.
type boxHeap []boxItem

func (h boxHeap) Len() int { return len(h) }
func (h boxHeap) Less(i, j int) bool {
	if h[i].value != h[j].value {
		return h[i].value > h[j].value
	}
	for g := range h[i].box {
		a, b := h[i].box[g], h[j].box[g]
		if a.Lo != b.Lo {
			return a.Lo < b.Lo
		}
		if a.Hi != b.Hi {
			return a.Hi < b.Hi
		}
	}
	return false
}
func (h boxHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *boxHeap) Push(x any)   { *h = append(*h, x.(boxItem)) }
func (h *boxHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// configLP is the configuration LP of UpperBound for a fixed set of share
// sizes; only the forced pods and the whole GPUs change between solves.
type configLP struct {
	nGPU     int
	sizes    []int64
	arrivals []int
	configs  [][]int // pods of each size per configuration
	used     []int64 // milli of each configuration
}

func newConfigLP(nGPU int, sizes []int64, arrivals []int) *configLP {
	p := &configLP{nGPU: nGPU, sizes: sizes, arrivals: arrivals}
	ns := len(sizes)
	// Each multiset once, its sizes taken in index order.
	cur := make([]int, ns)
	var used int64
	var rec func(i int, rem int64)
	rec = func(i int, rem int64) {
		for j := i; j < ns; j++ {
			if sizes[j] <= rem && cur[j] < arrivals[j] {
				cur[j]++
				used += sizes[j]
				p.configs = append(p.configs, append([]int(nil), cur...))
				p.used = append(p.used, used)
				rec(j, rem-sizes[j])
				cur[j]--
				used -= sizes[j]
			}
		}
	}
	rec(0, MilliPerGPU)
	return p
}

type lpOutcome struct {
	value      float64 // milli-GPU, an upper bound on the LP's optimum
	infeasible bool    // proved: no x meets the forced counts
	relaxed    bool    // solved without the forced counts
}

// solve bounds the used milli-GPU with at least forced[j] pods of size j and
// at most whole GPUs of whole-GPU pods. The value is not the simplex's primal
// optimum but the objective of its dual solution, made feasible (weak
// duality), so rounding in the simplex cannot make it too low; infeasibility is
// accepted only with a Farkas certificate checked on the data, otherwise the LP
// is solved again without the forced counts.
func (p *configLP) solve(forced []int, whole int) (lpOutcome, error) {
	v, ok, err := p.bound(forced, whole)
	switch {
	case err != nil:
		return lpOutcome{}, err
	case ok:
		return lpOutcome{value: v}, nil
	case v < 0:
		return lpOutcome{infeasible: true}, nil
	}
	v, ok, err = p.bound(nil, whole)
	switch {
	case err != nil:
		return lpOutcome{}, fmt.Errorf("without forced pods: %w", err)
	case !ok: // x = 0 meets every row when nothing is forced
		return lpOutcome{}, fmt.Errorf("the configuration lp without forced pods found infeasible")
	}
	return lpOutcome{value: v, relaxed: true}, nil
}

// bound returns (value, true) at an optimum, (-1, false) for a proved
// infeasible LP and (0, false) for an unproved one.
func (p *configLP) bound(forced []int, whole int) (float64, bool, error) {
	ns, nc := len(p.sizes), len(p.configs)
	// Rows (all ≤): capacity, arrivals per size, -forced per size with forced
	// pods, whole GPUs. Columns: configurations, then whole GPUs y.
	var lower []int
	for j := range forced {
		if forced[j] > 0 {
			lower = append(lower, j)
		}
	}
	m, n := 2+ns+len(lower), nc+1
	a := make([]float64, m*n)
	b := make([]float64, m)
	c := make([]float64, n)
	row := func(i int) []float64 { return a[i*n : (i+1)*n] }
	b[0] = float64(p.nGPU)
	for k := range row(0) {
		row(0)[k] = 1
	}
	for j := range p.sizes {
		b[1+j] = float64(p.arrivals[j])
	}
	for r, j := range lower {
		b[1+ns+r] = -float64(forced[j])
	}
	b[m-1] = float64(whole)
	row(m - 1)[nc] = 1
	for k, cf := range p.configs {
		for j, x := range cf {
			if x > 0 {
				row(1 + j)[k] = float64(x)
			}
		}
		c[k] = float64(p.used[k]) / MilliPerGPU
	}
	for r, j := range lower {
		rw := row(1 + ns + r)
		for k, cf := range p.configs {
			rw[k] = -float64(cf[j])
		}
	}
	c[nc] = 1
	sol, err := solveLP(a, m, n, b, c)
	if err != nil {
		return 0, false, fmt.Errorf("solving the configuration lp (%d rows, %d columns): %w", m, n, err)
	}
	// Every column has a 1 in the capacity row: Σ x ≤ #GPUs for every x that
	// meets it.
	sumX := float64(p.nGPU)
	switch sol.status {
	case lpOptimal:
		v, err := dualBound(a, m, n, b, c, sol.dual, sumX)
		if err != nil {
			return 0, false, err
		}
		return v * MilliPerGPU, true, nil
	case lpInfeasible:
		if farkas(a, m, n, b, sol.dual, sumX) {
			return -1, false, nil
		}
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("configuration lp: %v", sol.status)
}
