package topology

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// MIGGPU is one GPU's MIG geometry and its slices, as seen by a request for
// one slice of a profile.
type MIGGPU struct {
	// Profiles is the GPU's geometry: every GPU-instance profile it offers with
	// its legal placements (gpu.MIGManager.MIGProfiles).
	Profiles []gpu.MIGProfileInfo
	// Used are the placements of the slices handed out, of any profile. Every
	// memory slice they do not cover counts as free, whether or not an idle
	// MIG device sits on it, since a layout change could reuse it.
	Used []gpu.Placement
	// Free are the placements of the existing, unallocated slices of the
	// requested profile: the candidates. Leave it empty for an unhealthy GPU.
	Free []gpu.Placement
}

// PickMIGSlice returns the free slice of g whose use least fragments what
// remains: after taking it, the GPU's profiles, largest first (by slice count,
// then name), can still be placed as many times as possible in the free
// memory slices (compared profile by profile); ties go to the lowest start.
//
// It fails when g's geometry or placements are inconsistent (a placement
// outside the GPU's memory slices, a free slice overlapping a used one or
// another free one), and with an error wrapping ErrInsufficient when g has no
// free slice.
func PickMIGSlice(g MIGGPU) (gpu.Placement, error) {
	var w migWork
	c, err := g.choose(&w)
	if err != nil {
		return gpu.Placement{}, err
	}
	if c.free == -1 {
		return gpu.Placement{}, fmt.Errorf("no free mig slice of the requested profile: %w", ErrInsufficient)
	}
	return g.Free[c.free], nil
}

// PickMIGDevice returns the GPU (its position in gpus) and the free slice to
// serve a request for one slice of a profile, packing: the GPU with the fewest
// free memory slices first, so that emptier GPUs stay whole; then the slice
// PickMIGSlice would choose, by what it leaves of that GPU; then the lowest
// GPU position.
//
// It fails as PickMIGSlice does, naming the GPU, and with an error wrapping
// ErrInsufficient when no GPU has a free slice.
func PickMIGDevice(gpus []MIGGPU) (int, gpu.Placement, error) {
	var w migWork
	var bestCap [stackMIGProfiles]int
	best, bestGPU := migChoice{free: -1}, -1
	for i, g := range gpus {
		c, err := g.choose(&w)
		if err != nil {
			return 0, gpu.Placement{}, fmt.Errorf("gpu %d: %w", i, err)
		}
		if c.free == -1 {
			continue
		}
		if bestGPU < 0 || c.betterAcrossGPUs(best) {
			// c.capacity is w's scratch, which the next choice reuses.
			keep := bestCap[:0]
			if len(c.capacity) > len(bestCap) {
				keep = make([]int, 0, len(c.capacity))
			}
			c.capacity = append(keep, c.capacity...)
			best, bestGPU = c, i
		}
	}
	if bestGPU < 0 {
		return 0, gpu.Placement{}, fmt.Errorf("no free mig slice of the requested profile on any of %d gpus: %w", len(gpus), ErrInsufficient)
	}
	return bestGPU, gpus[bestGPU].Free[best.free], nil
}

// migChoice is the best free slice of one GPU.
type migChoice struct {
	free      int   // index into Free; -1 when there is none
	freeCount int   // free memory slices before the choice
	capacity  []int // instances placeable afterwards, per profile, largest profile first
}

func (c migChoice) betterAcrossGPUs(o migChoice) bool {
	if c.freeCount != o.freeCount {
		return c.freeCount < o.freeCount
	}
	return slices.Compare(c.capacity, o.capacity) > 0
}

// Sizes of the scratch of a MIG choice kept on the stack; larger geometries
// use the heap.
const (
	stackMIGProfiles   = 16
	stackMIGPlacements = 64
)

// migWork is the scratch memory of MIG choices, reused GPU after GPU.
type migWork struct {
	order  [stackMIGProfiles]int
	bounds [stackMIGProfiles + 1]int
	max    [stackMIGProfiles]int
	flat   [stackMIGPlacements]uint64
	free   [64]uint64 // a GPU has at most 64 memory slices, so at most 64 free slices that do not overlap
	caps   [2][stackMIGProfiles]int
}

// choose validates g and finds its best free slice. The choice's capacity is
// w's scratch.
func (g MIGGPU) choose(w *migWork) (migChoice, error) {
	if len(g.Profiles) == 0 {
		return migChoice{}, errors.New("gpu has no mig profiles")
	}
	total := 0
	for _, p := range g.Profiles {
		for _, pl := range p.Placements {
			if pl.Start < 0 || pl.Size < 1 {
				return migChoice{}, fmt.Errorf("mig profile %s has placement %s, want start >= 0 and size >= 1", p.Name, pl)
			}
			total = max(total, pl.Start+pl.Size)
		}
	}
	if total > 64 {
		return migChoice{}, fmt.Errorf("mig geometry spans %d memory slices, at most 64 are supported", total)
	}
	var used uint64
	for _, pl := range g.Used {
		m, err := span(pl, total, "used")
		if err != nil {
			return migChoice{}, err
		}
		used |= m
	}
	masks := w.free[:0]
	for i, pl := range g.Free {
		m, err := span(pl, total, "free")
		if err != nil {
			return migChoice{}, err
		}
		if m&used != 0 {
			return migChoice{}, fmt.Errorf("free slice %s overlaps a used slice (used: %s)", pl, placementList(g.Used))
		}
		for j := range i {
			if m&masks[j] != 0 {
				return migChoice{}, fmt.Errorf("free slices %s and %s overlap", g.Free[j], pl)
			}
		}
		masks = append(masks, m)
	}
	all := uint64(1)<<total - 1
	best := migChoice{free: -1, freeCount: bits.OnesCount64(all &^ used)}
	if len(masks) == 0 {
		return best, nil
	}
	geometry := newMIGGeometry(g.Profiles, w)
	np := len(geometry.max)
	var bestCap, scratch []int
	if np <= stackMIGProfiles {
		bestCap, scratch = w.caps[0][:np], w.caps[1][:np]
	} else {
		bestCap, scratch = make([]int, np), make([]int, np)
	}
	for i, m := range masks {
		free := all &^ used &^ m
		if best.free < 0 {
			for p := range np {
				bestCap[p] = geometry.count(p, free)
			}
			best.free = i
			continue
		}
		// Compared profile by profile as computed: a slice that leaves
		// less for a profile than the best so far, after as much for the
		// profiles before it, is out.
		c := 0
		for p := range np {
			scratch[p] = geometry.count(p, free)
			if c == 0 {
				if c = cmp.Compare(scratch[p], bestCap[p]); c < 0 {
					break
				}
			}
		}
		if c > 0 || (c == 0 && g.Free[i].Start < g.Free[best.free].Start) {
			best.free = i
			bestCap, scratch = scratch, bestCap
		}
	}
	best.capacity = bestCap
	return best, nil
}

// span returns the memory slices of a placement as a mask, failing when it
// is outside the GPU's total memory slices.
func span(pl gpu.Placement, total int, what string) (uint64, error) {
	if pl.Start < 0 || pl.Size < 1 || pl.Start+pl.Size > total {
		return 0, fmt.Errorf("%s slice %s is outside the gpu's memory slices 0 to %d", what, pl, total-1)
	}
	return (uint64(1)<<pl.Size - 1) << pl.Start, nil
}

// migGeometry is a GPU's profiles, largest first (by slice count, then name),
// each with its placements as memory-slice masks, earliest-ending first:
// profile i's are flat[bounds[i]:bounds[i+1]].
type migGeometry struct {
	flat   []uint64
	bounds []int
	max    []int
}

// newMIGGeometry builds the geometry of profiles in w's scratch (on the heap
// when it does not fit).
func newMIGGeometry(profiles []gpu.MIGProfileInfo, w *migWork) migGeometry {
	np, count := len(profiles), 0
	for _, p := range profiles {
		count += len(p.Placements)
	}
	order := w.order[:0]
	g := migGeometry{flat: w.flat[:0], bounds: w.bounds[:0], max: w.max[:0]}
	if np > stackMIGProfiles {
		order = make([]int, 0, np)
		g.bounds, g.max = make([]int, 0, np+1), make([]int, 0, np)
	}
	if count > len(w.flat) {
		g.flat = make([]uint64, 0, count)
	}
	for i := range profiles {
		order = append(order, i)
	}
	slices.SortStableFunc(order, func(x, y int) int {
		if c := cmp.Compare(profiles[y].SliceCount, profiles[x].SliceCount); c != 0 {
			return c
		}
		return strings.Compare(profiles[x].Name, profiles[y].Name)
	})
	g.bounds = append(g.bounds, 0)
	for _, pi := range order {
		p := &profiles[pi]
		start := len(g.flat)
		for _, pl := range p.Placements {
			g.flat = append(g.flat, (uint64(1)<<pl.Size-1)<<pl.Start)
		}
		slices.SortFunc(g.flat[start:], func(x, y uint64) int { return cmp.Compare(bits.Len64(x), bits.Len64(y)) })
		g.bounds = append(g.bounds, len(g.flat))
		g.max = append(g.max, p.MaxInstances)
	}
	return g
}

// count is how many instances of profile p fit at once in the free memory
// slices: earliest-ending placements first, which is optimal for intervals,
// capped at the profile's MaxInstances.
func (g migGeometry) count(p int, free uint64) int {
	limit, count := g.max[p], 0
	for _, m := range g.flat[g.bounds[p]:g.bounds[p+1]] {
		if limit > 0 && count >= limit {
			break
		}
		if free&m == m {
			count++
			free &^= m
		}
	}
	return count
}

func placementList(ps []gpu.Placement) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
