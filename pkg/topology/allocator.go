package topology

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// MaxDevices is the largest number of GPUs a node may have for Allocator.
const MaxDevices = 64

// DefaultSearchLimit is the largest number of candidate sets searched
// exhaustively (with branch and bound); above it the search is greedy. It
// covers every request on a node of up to 16 GPUs.
const DefaultSearchLimit = 20000

// maxSearchLimit keeps the search limit far from integer overflow.
const maxSearchLimit = 1 << 40

// MaxTieCandidates is the most sets that tie on Quality which the allocator
// compares by what they leave free; further ties are dropped.
const MaxTieCandidates = 64

// defaultLookahead are the request sizes the allocator keeps good sets for
// when it breaks a tie, besides the size being requested.
var defaultLookahead = []int{8, 4, 2}

// ErrInsufficient means a valid request cannot be met from what is free: too
// few free GPUs, no GPU with enough free share units, or no free MIG slice.
// Test for it with errors.Is.
var ErrInsufficient = errors.New("insufficient free devices")

// Allocator chooses sets of whole GPUs on one node. It holds only the node's
// link matrix and NUMA nodes, is immutable after New, and is safe for
// concurrent use.
type Allocator struct {
	n         int
	nv        []int          // n×n NVLink counts
	path      []gpu.PCIePath // n×n PCIe paths
	numa      []uint64       // per device: one bit for its NUMA node
	maxNV     int            // the largest NVLink count between any pair
	uniform   bool           // every pair has maxNV NVLinks
	deg       []int          // per device: its NVLinks to all others
	top       []int          // n×n: top[d*n+m] is the sum of d's m largest NVLink counts
	lookahead []int          // look-ahead sizes besides k, largest first
	limit     int
}

// Option changes how an Allocator searches.
type Option func(*Allocator)

// WithLookahead sets the request sizes kept in mind when breaking ties
// (default 8, 4 and 2); sizes below 2 are ignored, since every single GPU
// ranks the same. The requested size is always looked ahead for too.
func WithLookahead(sizes ...int) Option {
	return func(a *Allocator) { a.lookahead = slices.Clone(sizes) }
}

// WithSearchLimit sets the largest number of candidate sets searched
// exhaustively (default DefaultSearchLimit); limit < 1 means the default.
func WithSearchLimit(limit int) Option {
	return func(a *Allocator) {
		if limit >= 1 {
			a.limit = min(limit, maxSearchLimit)
		}
	}
}

// New returns an allocator for a node whose GPUs, by position, are linked as t
// says and sit on the NUMA nodes numa gives (-1 for unknown; nil when no NUMA
// node is known). t must be a valid matrix (gpu.Topology.Validate) of at most
// MaxDevices GPUs.
func New(t gpu.Topology, numa []int, opts ...Option) (*Allocator, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("invalid topology: %w", err)
	}
	n := len(t.Links)
	if n > MaxDevices {
		return nil, fmt.Errorf("topology has %d gpus, at most %d are supported", n, MaxDevices)
	}
	if numa != nil && len(numa) != n {
		return nil, fmt.Errorf("numa lists %d gpus, topology has %d", len(numa), n)
	}
	a := &Allocator{
		n:         n,
		nv:        make([]int, n*n),
		path:      make([]gpu.PCIePath, n*n),
		numa:      make([]uint64, n),
		deg:       make([]int, n),
		top:       make([]int, n*n),
		lookahead: slices.Clone(defaultLookahead),
		limit:     DefaultSearchLimit,
	}
	for _, o := range opts {
		o(a)
	}
	// NUMA node ids become bits; unknown (-1 or nil) is one more id of its own.
	ids := map[int]int{}
	for i := range n {
		id := -1
		if numa != nil {
			id = numa[i]
		}
		if id < -1 {
			return nil, fmt.Errorf("gpu %d has numa node %d, want -1 (unknown) or a node number", i, id)
		}
		b, ok := ids[id]
		if !ok {
			b = len(ids)
			ids[id] = b
		}
		a.numa[i] = 1 << b
	}
	for i := range n {
		for j := range n {
			l := t.Links[i][j]
			if l.NVLinks < 0 {
				return nil, fmt.Errorf("link between gpu %d and gpu %d has %d nvlinks", i, j, l.NVLinks)
			}
			a.nv[i*n+j] = l.NVLinks
			a.path[i*n+j] = l.PCIe
			a.maxNV = max(a.maxNV, l.NVLinks)
		}
	}
	a.uniform = true
	for i := range n {
		for j := range n {
			if i != j && a.nv[i*n+j] != a.maxNV {
				a.uniform = false
			}
		}
	}
	for d := range n {
		row := slices.Clone(a.nv[d*n : (d+1)*n])
		slices.SortFunc(row, func(x, y int) int { return y - x })
		for m := 1; m < n; m++ {
			a.top[d*n+m] = a.top[d*n+m-1] + row[m-1]
		}
		a.deg[d] = a.top[d*n+n-1] + row[n-1]
	}
	la := []int{}
	for _, s := range a.lookahead {
		if s >= 2 && !slices.Contains(la, s) {
			la = append(la, s)
		}
	}
	slices.SortFunc(la, func(x, y int) int { return y - x })
	a.lookahead = la
	return a, nil
}

// ForMachine returns an allocator for a discovered machine: its Topology, and
// the NUMA node of each of its Devices.
func ForMachine(m *gpu.Machine, opts ...Option) (*Allocator, error) {
	if len(m.Devices) != len(m.Topology.Links) {
		return nil, fmt.Errorf("machine has %d devices but a topology of %d", len(m.Devices), len(m.Topology.Links))
	}
	numa := make([]int, len(m.Devices))
	for i, d := range m.Devices {
		numa[i] = d.NUMANode
	}
	return New(m.Topology, numa, opts...)
}

// Len returns the number of GPUs on the node.
func (a *Allocator) Len() int { return a.n }

// Allocate returns k positions from free, ascending, with every position of
// mustInclude among them: the best-ranked set (see the package documentation),
// ties broken to keep the best sets free for the next requests, then by lowest
// positions. The order of free and mustInclude does not matter.
//
// It fails, naming the bad value, when k < 1, when a position is outside the
// topology or listed twice, when mustInclude is not a subset of free, or when
// mustInclude has more than k positions; and with an error wrapping
// ErrInsufficient when free has fewer than k positions.
func (a *Allocator) Allocate(free, mustInclude []int, k int) ([]int, error) {
	set, _, err := a.AllocateQuality(free, mustInclude, k)
	return set, err
}

// AllocateQuality is Allocate that also returns the chosen set's quality,
// which is what BestQuality returns for the same request.
func (a *Allocator) AllocateQuality(free, mustInclude []int, k int) ([]int, Quality, error) {
	freeMask, mustMask, err := a.request(free, mustInclude, k)
	if err != nil {
		return nil, Quality{}, err
	}
	var w work
	var ties [MaxTieCandidates]uint64
	set, q := a.best(freeMask, mustMask, k, ties[:], &w)
	return positions(set), q.public(), nil
}

// BestQuality returns the quality of the set Allocate would choose for k GPUs
// from free, without the work of breaking ties: what a node can still offer a
// request of k GPUs. It fails as Allocate does.
func (a *Allocator) BestQuality(free, mustInclude []int, k int) (Quality, error) {
	freeMask, mustMask, err := a.request(free, mustInclude, k)
	if err != nil {
		return Quality{}, err
	}
	var w work
	var one [1]uint64
	_, q := a.best(freeMask, mustMask, k, one[:], &w)
	return q.public(), nil
}

// Offers reports whether BestQuality(free, nil, k) ranks at least q (see
// Quality.Compare), usually with less work: the search prunes every set that
// ranks below q and stops at the first set that does not. It fails as
// BestQuality does.
func (a *Allocator) Offers(free []int, k int, q Quality) (bool, error) {
	freeMask, _, err := a.request(free, nil, k)
	if err != nil {
		return false, err
	}
	if k == 1 || combinations(len(free), k, a.limit) > a.limit {
		// A single GPU's quality differs from the search's (no weakest
		// pair), and the greedy search must run whole to give BestQuality's
		// answer.
		var w work
		var one [1]uint64
		_, best := a.best(freeMask, 0, k, one[:], &w)
		return best.public().Compare(q) >= 0, nil
	}
	var w work
	var one [1]uint64
	ties, _ := a.searchFrom(freeMask, 0, k, one[:], &w, &q)
	return len(ties) > 0, nil
}

// Quality returns the quality of a set of GPU positions. It fails when the set
// is empty, or has a position outside the topology or listed twice.
func (a *Allocator) Quality(set []int) (Quality, error) {
	mask, err := a.mask(set, "set")
	if err != nil {
		return Quality{}, err
	}
	if mask == 0 {
		return Quality{}, errors.New("empty set has no quality")
	}
	p := partial{minNV: noPairs}
	for m := mask; m != 0; m &= m - 1 {
		p = a.add(p, bits.TrailingZeros64(m))
	}
	return p.quality().public(), nil
}

// request validates a whole-GPU request and returns it as bit masks.
func (a *Allocator) request(free, mustInclude []int, k int) (freeMask, mustMask uint64, err error) {
	if k < 1 {
		return 0, 0, fmt.Errorf("requested %d gpus, want at least 1", k)
	}
	if freeMask, err = a.mask(free, "free"); err != nil {
		return 0, 0, err
	}
	if mustMask, err = a.mask(mustInclude, "mustInclude"); err != nil {
		return 0, 0, err
	}
	if extra := mustMask &^ freeMask; extra != 0 {
		return 0, 0, fmt.Errorf("mustInclude gpus %v are not free (free: %v)", positions(extra), positions(freeMask))
	}
	if len(mustInclude) > k {
		return 0, 0, fmt.Errorf("mustInclude has %d gpus %v, more than the %d requested", len(mustInclude), positions(mustMask), k)
	}
	if len(free) < k {
		return 0, 0, fmt.Errorf("requested %d gpus, %d free %v: %w", k, len(free), positions(freeMask), ErrInsufficient)
	}
	return freeMask, mustMask, nil
}

// mask turns positions into a bit mask, rejecting unknown and repeated ones.
func (a *Allocator) mask(ps []int, what string) (uint64, error) {
	var m uint64
	for _, p := range ps {
		if p < 0 || p >= a.n {
			if a.n == 0 {
				return 0, fmt.Errorf("%s lists gpu position %d, the node has no gpus", what, p)
			}
			return 0, fmt.Errorf("%s lists gpu position %d, the node has positions 0 to %d", what, p, a.n-1)
		}
		if m&(1<<p) != 0 {
			return 0, fmt.Errorf("%s lists gpu position %d twice", what, p)
		}
		m |= 1 << p
	}
	return m, nil
}

// positions lists the bits of m, ascending.
func positions(m uint64) []int {
	out := make([]int, 0, bits.OnesCount64(m))
	for ; m != 0; m &= m - 1 {
		out = append(out, bits.TrailingZeros64(m))
	}
	return out
}
