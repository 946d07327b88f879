package scoring

// Parts of the placement score as they were before they were made faster,
// kept as the reference that TestScoreMatchesReference compares against.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// refFrag is frag written plainly, from the definition: the node's
// expected fragmentation against the target shapes, in GPUs, with dl
// applied when not nil: for each shape, the free capacity it cannot use
// (all of it when it does not fit the node: CPU, product, too few GPUs, no
// slice of its profile, no GPU with its share units free; otherwise the
// capacity on GPUs it cannot use), weighted by the shape's probability.
// Memory is left out, as in FGD. A shared GPU with ShareWhole and every
// unit free also counts as a free whole GPU.
func (n *NodeCache) refFrag(shapes []targetShape, dl *delta) float64 {
	cpu, total := n.st.CPUFree, n.free
	if dl != nil {
		cpu -= dl.cpu
		switch dl.kind {
		case KindWhole:
			total -= float64(len(dl.a.GPUs))
		case KindShare:
			total -= float64(dl.units) / float64(n.st.GPUs[dl.a.GPUs[0]].ShareTotal)
		case KindMIG:
			total -= n.sliceFrac[dl.a.GPUs[0]][dl.a.Slice]
		}
	}
	var out float64
	for si := range shapes {
		r, p := shapes[si].r, shapes[si].p
		if r.kind == KindNone || cpu < r.Demand.CPU {
			out += p * total
			continue
		}
		usable, count := 0.0, 0
		for i := range n.st.GPUs {
			g := &n.st.GPUs[i]
			if !g.Healthy || !r.allows(n.prod[i]) {
				continue
			}
			taken := dl != nil && slices.Contains(dl.a.GPUs, i)
			free := g.ShareFree
			if taken && dl.kind == KindShare {
				free -= dl.units
			}
			if taken && dl.kind == KindWhole {
				free = 0
			}
			switch r.kind {
			case KindWhole:
				whole := g.Mode == ModeWhole && !g.Used || g.Mode == ModeShared && g.ShareWhole && free == g.ShareTotal && !g.Used
				if whole && (!taken || dl.kind != KindWhole) {
					usable++
					count++
				}
			case KindMIG:
				if g.Mode != ModeMIG {
					continue
				}
				u := 0.0
				for j, sl := range g.MIGSlices {
					if sl.Used || n.sliceProfile[i][j] != r.profile ||
						(taken && dl.kind == KindMIG && dl.a.Slice == j) {
						continue
					}
					u += n.sliceFrac[i][j]
				}
				if u > 0 {
					usable += u
					count++
				}
			case KindShare:
				if g.Mode == ModeShared && !g.Used && free >= r.Demand.ShareUnits {
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

// refKeepScore is keepScore as it was: every best quality searched for
// (neutral on a node without a link matrix).
func (n *NodeCache) refKeepScore(s *Scorer, set []int) float64 {
	if !n.linked {
		return 1
	}
	var free, rest []int
	free = n.wholeFree(free, nil)
	for _, g := range free {
		if !slices.Contains(set, g) {
			rest = append(rest, g)
		}
	}
	kept, avail := 0, 0
	for _, m := range s.cfg.Lookahead {
		if len(free) < m {
			continue
		}
		before, err := n.alloc.BestQuality(free, nil, m)
		if err != nil {
			continue
		}
		avail++
		if len(rest) < m {
			continue
		}
		q, err := n.alloc.BestQuality(rest, nil, m)
		if err == nil && q.Compare(before) >= 0 {
			kept++
		}
	}
	if avail == 0 {
		return 1
	}
	return float64(kept) / float64(avail)
}

// refH100 is an H100's MIG geometry.
func refH100() []gpu.MIGProfileInfo {
	aligned := func(size, limit int) []gpu.Placement {
		var out []gpu.Placement
		for s := 0; s < limit && s+size <= 8; s += size {
			out = append(out, gpu.Placement{Start: s, Size: size})
		}
		return out
	}
	return []gpu.MIGProfileInfo{
		{Name: "1g.10gb", SliceCount: 1, MaxInstances: 7, Placements: aligned(1, 7)},
		{Name: "1g.20gb", SliceCount: 1, MaxInstances: 4, Placements: aligned(2, 8)},
		{Name: "2g.20gb", SliceCount: 2, MaxInstances: 3, Placements: aligned(2, 6)},
		{Name: "3g.40gb", SliceCount: 3, MaxInstances: 2, Placements: aligned(4, 8)},
		{Name: "4g.40gb", SliceCount: 4, MaxInstances: 1, Placements: aligned(4, 4)},
		{Name: "7g.80gb", SliceCount: 7, MaxInstances: 1, Placements: aligned(8, 8)},
	}
}

// refNode is a random node of 8 GPUs on a DGX-like or PCIe-like topology:
// whole GPUs (some used), MIG GPUs cut into random slices (some used) and
// shared GPUs, of two products, a few unhealthy.
func refNode(rng *rand.Rand) NodeState {
	const size = 8
	st := NodeState{Name: "ref", Topology: gpu.NewTopology(size), CPUFree: int64(rng.IntN(200_000)), MemFree: int64(rng.IntN(2 << 20))}
	fabric := rng.IntN(2) == 0
	unlinked := rng.IntN(5) == 0 // no link matrix, as a trace's node
	for i := range size {
		if unlinked {
			break
		}
		for j := i + 1; j < size; j++ {
			l := gpu.Link{PCIe: gpu.PathCrossCPU}
			if i/4 == j/4 {
				l.PCIe = gpu.PathSameCPU
			}
			if i/2 == j/2 {
				l.PCIe = gpu.PathSingleSwitch
			}
			if fabric {
				l.NVLinks, l.NVSwitch = 18, true
			} else if i/2 == j/2 {
				l.NVLinks = 12
			}
			st.Topology.Set(i, j, l)
		}
	}
	profiles := refH100()
	for i := range size {
		g := GPU{Product: []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"}[rng.IntN(2)], NUMANode: i / 4, Healthy: rng.IntN(10) > 0}
		switch rng.IntN(4) {
		case 0:
			g.Mode = ModeMIG
			g.MIGProfiles = profiles
			for at := 0; at < 8; {
				p := profiles[rng.IntN(len(profiles))]
				var pl gpu.Placement
				for _, c := range p.Placements {
					if c.Start == at {
						pl = c
					}
				}
				if pl.Size == 0 {
					at++
					continue
				}
				g.MIGSlices = append(g.MIGSlices, MIGSlice{Profile: p.Name, Placement: pl, Used: rng.IntN(3) == 0})
				at += pl.Size
			}
		case 1:
			g.Mode = ModeShared
			g.ShareTotal = 4
			g.ShareFree = rng.IntN(5)
			if rng.IntN(2) == 0 {
				g.ShareWhole = true
				if g.ShareFree == 0 {
					g.Used = rng.IntN(2) == 0
				}
			}
		default:
			g.Used = rng.IntN(3) == 0
		}
		st.GPUs = append(st.GPUs, g)
	}
	return st
}

// refDemand is a random pod.
func refDemand(rng *rand.Rand) Demand {
	d := Demand{CPU: int64(rng.IntN(64_000)), Memory: int64(rng.IntN(512 << 10))}
	switch rng.IntN(5) {
	case 0, 1:
		d.GPUs = []int{1, 2, 3, 4, 8}[rng.IntN(5)]
	case 2:
		d.MIGProfile = []string{"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb"}[rng.IntN(4)]
	case 3:
		d.ShareUnits = 1 + rng.IntN(3)
		d.UnitsPerGPU = 4
	}
	if rng.IntN(4) == 0 {
		d.Allowed = []string{"NVIDIA-H100-80GB-HBM3"}
	}
	return d
}

// refHosts is hostCount by gpuUse: the pods of whole-GPU shape r the node
// can host, with dl applied when not nil, by GPUs and CPU.
func (n *NodeCache) refHosts(r *Request, dl *delta) int {
	gpus := 0
	for i := range n.st.GPUs {
		if _, ok := n.gpuUse(r, i, dl); ok {
			gpus++
		}
	}
	c := gpus / r.Demand.GPUs
	if r.Demand.CPU > 0 {
		cpu := n.st.CPUFree
		if dl != nil {
			cpu -= dl.cpu
		}
		c = min(c, int(max(cpu, 0)/r.Demand.CPU))
	}
	return c
}

// TestScoreMatchesReference scores random pods on random nodes, assuming
// some of them, and checks the parts that were made faster against their
// reference: the fragmentation before and after (up to rounding: the
// fast one recounts only the GPUs a placement takes), the keep score, the
// device set and its quality.
func TestScoreMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	checked := map[Kind]int{}
	for i := range 1000 {
		s, err := NewScorer(DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		var target []*Request
		var weights []float64
		for range 1 + rng.IntN(10) {
			r, err := s.Compile(refDemand(rng))
			if err != nil {
				t.Fatal(err)
			}
			target = append(target, r)
			weights = append(weights, rng.Float64())
		}
		if err := s.SetTarget(target, weights); err != nil {
			t.Fatal(err)
		}
		n, err := s.NewNode(refNode(rng))
		if err != nil {
			t.Fatal(err)
		}
		var seen []*Request
		for j := range 40 {
			r, err := s.Compile(refDemand(rng))
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) > 0 && rng.IntN(2) == 0 { // a pod scored before, maybe cached
				r = seen[rng.IntN(len(seen))]
			} else {
				seen = append(seen, r)
			}
			if rng.IntN(3) == 0 {
				n.dropCaches()
			}
			res := s.Score(n, r)
			where := fmt.Sprintf("case %d.%d: %+v", i, j, r.Demand)
			// The result, perhaps from the node's caches, is the one
			// computed without them (on a copy of the node: its state
			// shared, its caches dropped, its cached best qualities
			// not overwritten).
			fresh := *n
			fresh.best = nil
			fresh.dropCaches()
			cached := res
			cached.Key, cached.ScarcityCost = 0, 0 // set by Score outside the caches
			if want := s.score(&fresh, r, nil); fmt.Sprint(want) != fmt.Sprint(cached) {
				t.Fatalf("%s: Score = %+v, without caches %+v", where, res, want)
			}
			// Rank, which the plugin's PreScore and the replay call, is
			// Score's Key or its Err.
			if key, err := s.Rank(n, r); (err != nil) != (res.Err != nil) || err == nil && key != res.Key {
				t.Fatalf("%s: Rank = %d, %v; Score's key %d, error %v", where, key, err, res.Key, res.Err)
			}
			s.Fragmentation(n) // the shapes' use of the node, which frag starts from
			if got, want := n.frag(s.shapes, nil), n.refFrag(s.shapes, nil); math.Abs(got-want) > 1e-9 {
				t.Fatalf("%s: fragmentation %v, the reference %v", where, got, want)
			}
			if res.Err != nil {
				continue
			}
			checked[r.kind]++
			d := r.Demand
			dl := delta{cpu: d.CPU, kind: r.kind, a: &res.Assignment, units: d.ShareUnits, capacity: n.demandCapacity(r, &res.Assignment)}
			if got, want := n.frag(s.shapes, &dl), n.refFrag(s.shapes, &dl); math.Abs(got-want) > 1e-9 {
				t.Fatalf("%s: fragmentation after %v: %v, the reference %v", where, res.Assignment, got, want)
			}
			if r.kind == KindWhole {
				free := n.wholeFree(nil, r)
				set, err := n.alloc.Allocate(free, nil, d.GPUs)
				if err != nil || !slices.Equal(set, res.Assignment.GPUs) {
					t.Fatalf("%s: gpus %v, Allocate %v, %v", where, res.Assignment.GPUs, set, err)
				}
				if q, err := n.alloc.Quality(set); err != nil || q != res.Quality {
					t.Fatalf("%s: quality %v, the set's %v, %v", where, res.Quality, q, err)
				}
				if want := n.refKeepScore(s, set); res.Keep != want {
					t.Fatalf("%s: keep %v, the reference %v", where, res.Keep, want)
				}
			}
			var wantLoss []shapeLoss
			for j, sh := range s.hostShapes {
				if lost := n.refHosts(sh.r, nil) - n.refHosts(sh.r, &dl); lost > 0 {
					wantLoss = append(wantLoss, shapeLoss{j: int32(j), lost: int32(lost)})
				}
			}
			if fmt.Sprint(res.losses) != fmt.Sprint(wantLoss) {
				t.Fatalf("%s: host shapes' pods lost %v, the reference %v", where, res.losses, wantLoss)
			}
			if rng.IntN(4) == 0 {
				if err := n.Assume(r, res.Assignment); err != nil {
					t.Fatal(err)
				}
				// The scorer's count of the host shapes' pods follows the node.
				for j, sh := range s.hostShapes {
					want := n.refHosts(sh.r, nil)
					if int(n.hosts[j]) != want || math.Abs(s.hostFree[j]-float64(want)*sh.r.gpus) > 1e-9 {
						t.Fatalf("%s: after Assume, host shape %d: node hosts %d, cluster %v GPUs; the reference %d pods", where, j, n.hosts[j], s.hostFree[j], want)
					}
				}
			}
		}
	}
	// Enough of each kind of pod fitted to check the scores on.
	for _, k := range []Kind{KindNone, KindWhole, KindMIG, KindShare} {
		if checked[k] < 300 {
			t.Errorf("only %d pods of kind %d fitted", checked[k], k)
		}
	}
}
