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

// TestSharedMemoMatchesFreshScores runs racks of identical whole-GPU nodes
// through random placements, releases, health changes and target refreshes,
// and checks every score — many of them copied from another node of the
// same class and state (shared.go) — against the same node's fresh score.
func TestSharedMemoMatchesFreshScores(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	cfg := DefaultConfig()
	cfg.TargetEpoch = 8 // many epochs: every refresh makes every memo stale
	s, err := NewScorer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var pool []*Request
	for i := range 12 {
		d := refDemand(rng)
		if i < 8 { // mostly whole GPUs, the shared kind
			d.MIGProfile, d.ShareUnits, d.UnitsPerGPU = "", 0, 0
			d.GPUs = []int{1, 1, 2, 4, 8}[rng.IntN(5)]
			// Few sizes, so that nodes meet in the same states again.
			d.CPU, d.Memory = int64(rng.IntN(3))*8000, int64(rng.IntN(3))<<16
		}
		r, err := s.Compile(d)
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, r)
	}
	// CPU-only pods move a node's free CPU or memory and nothing else, as
	// the scheduler's other pods do.
	var cpuOnly []*Request
	for _, d := range []Demand{{CPU: 8000}, {Memory: 1 << 16}} {
		r, err := s.Compile(d)
		if err != nil {
			t.Fatal(err)
		}
		cpuOnly = append(cpuOnly, r)
	}
	var nodes []*NodeCache
	for c := range 4 {
		st := refNode(rng)
		for i := range st.GPUs {
			g := &st.GPUs[i]
			*g = GPU{Product: g.Product, NUMANode: g.NUMANode, Healthy: g.Healthy, Mode: ModeWhole, Used: rng.IntN(4) == 0}
		}
		// CPU and memory run out before the GPUs do on some nodes: both
		// change scores (CPU-stranded GPUs, fit).
		st.CPUFree, st.MemFree = 48_000, 5<<16
		for k := range 8 {
			st.Name = fmt.Sprintf("class%d-%d", c, k)
			n, err := s.NewNode(st)
			if err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, n)
		}
	}
	type placed struct {
		n *NodeCache
		r *Request
		a Assignment
	}
	var held []placed
	hits, stale, sharedReads := 0, 0, 0
	for step := range 4000 {
		n := nodes[rng.IntN(len(nodes))]
		r := pool[rng.IntN(len(pool))]
		switch op := rng.IntN(20); {
		case op < 5: // place
			if res := s.Score(n, r); res.Err == nil {
				a := res.Assignment
				a.GPUs = slices.Clone(a.GPUs)
				if err := n.Assume(r, a); err != nil {
					t.Fatalf("step %d: assume on %s: %v", step, n.st.Name, err)
				}
				held = append(held, placed{n, r, a})
				s.Observe(r)
			}
		case op < 12 && len(held) > 0: // release
			i := rng.IntN(len(held))
			p := held[i]
			if err := p.n.Forget(p.r, p.a); err != nil {
				t.Fatalf("step %d: forget on %s: %v", step, p.n.st.Name, err)
			}
			held = slices.Delete(held, i, i+1)
		case op < 14: // a CPU-only pod
			c := cpuOnly[rng.IntN(len(cpuOnly))]
			if s.Score(n, c).Err == nil {
				if err := n.Assume(c, Assignment{}); err != nil {
					t.Fatalf("step %d: assume on %s: %v", step, n.st.Name, err)
				}
				held = append(held, placed{n, c, Assignment{}})
			}
		case op == 14: // health
			i := rng.IntN(len(n.st.GPUs))
			if err := n.SetHealthy(i, !n.st.GPUs[i].Healthy); err != nil {
				t.Fatal(err)
			}
		}
		// Score r on every node, in a random order, as a scheduler ranks.
		for _, i := range rng.Perm(len(nodes)) {
			m := nodes[i]
			if k, ok := m.sharedKeyOf(r); ok {
				if _, cached := s.ownCached(m, r); !cached {
					stale++
					if _, shared := s.sharedGet(k); shared {
						hits++
					}
				}
			}
			want := s.score(uncached(m), r, nil)
			// What Filter reads without changing anything: the node's
			// memo or the shared one, when either answers.
			_, own := s.ownCached(m, r)
			if got, ok := s.Cached(m, r); ok {
				want := want
				want.losses, got.losses = nil, nil
				if fmt.Sprint(want) != fmt.Sprint(got) {
					t.Fatalf("step %d, node %s, %+v: Cached = %+v, fresh %+v", step, m.st.Name, r.Demand, got, want)
				}
				if !own {
					sharedReads++
				}
			}
			res := s.Score(m, r)
			cached := res
			cached.Key, cached.ScarcityCost = 0, 0
			if fmt.Sprint(want) != fmt.Sprint(cached) {
				t.Fatalf("step %d, node %s, %+v: Score = %+v, fresh %+v", step, m.st.Name, r.Demand, cached, want)
			}
			if key, err := s.Rank(m, r); (err != nil) != (res.Err != nil) || err == nil && key != res.Key {
				t.Fatalf("step %d, node %s: Rank = %d, %v; Score's key %d, error %v", step, m.st.Name, key, err, res.Key, res.Err)
			}
		}
	}
	// Many stale memos of shared kinds must have been refilled from the
	// shared memo, or
	// this test checked nothing it is named for.
	if hits < 1000 {
		t.Fatalf("%d of %d stale scores came from the shared memo, want at least 1,000", hits, stale)
	}
	if sharedReads < 1000 {
		t.Fatalf("Cached answered %d times from the shared memo, want at least 1,000", sharedReads)
	}
	t.Logf("%d of %d stale scores of whole-GPU nodes and pods came from the shared memo", hits, stale)
}

// TestSharedMemoKeysEveryStateField scores a request on node a, changes one
// thing that tells node b apart from a, and checks that b's score is its
// own, not a's copied: each case is one field of the shared memo's key.
func TestSharedMemoKeysEveryStateField(t *testing.T) {
	template := func() NodeState {
		st := NodeState{Name: "a", Topology: gpu.NewTopology(8), CPUFree: 64_000, MemFree: 1 << 20}
		for i := range 8 {
			for j := i + 1; j < 8; j++ {
				l := gpu.Link{PCIe: gpu.PathSingleSwitch}
				if i/4 == j/4 {
					l.NVLinks = 12
				}
				st.Topology.Set(i, j, l)
			}
			st.GPUs = append(st.GPUs, GPU{Product: "NVIDIA-H100-80GB-HBM3", NUMANode: i / 4, Healthy: true})
		}
		return st
	}
	for _, tc := range []struct {
		name string
		// state changes b's state before it is made; change changes b
		// (or the scorer), before a is scored unless afterA.
		state  func(*NodeState)
		change func(t *testing.T, s *Scorer, b *NodeCache)
		afterA bool
	}{
		{name: "free cpu", change: func(t *testing.T, s *Scorer, b *NodeCache) {
			assumeDemand(t, s, b, Demand{CPU: 60_000}, Assignment{})
		}},
		{name: "free memory", change: func(t *testing.T, s *Scorer, b *NodeCache) {
			assumeDemand(t, s, b, Demand{Memory: 1<<19 + 1}, Assignment{})
		}},
		{name: "used gpu", change: func(t *testing.T, s *Scorer, b *NodeCache) {
			assumeDemand(t, s, b, Demand{GPUs: 1}, Assignment{GPUs: []int{0}})
		}},
		{name: "unhealthy gpu", change: func(t *testing.T, s *Scorer, b *NodeCache) {
			if err := b.SetHealthy(0, false); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "target epoch", change: func(t *testing.T, s *Scorer, b *NodeCache) {
			r, err := s.Compile(Demand{GPUs: 8, CPU: 8000})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetTarget([]*Request{r}, []float64{1}); err != nil {
				t.Fatal(err)
			}
		}, afterA: true},
		{name: "product", state: func(st *NodeState) {
			for i := range st.GPUs {
				st.GPUs[i].Product = "NVIDIA-A100-SXM4-80GB"
			}
		}},
		{name: "links", state: func(st *NodeState) {
			st.Topology.Set(0, 1, gpu.Link{PCIe: gpu.PathCrossCPU})
		}},
		{name: "numa", state: func(st *NodeState) {
			st.GPUs[0].NUMANode = 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewScorer(DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Compile(Demand{GPUs: 2, CPU: 8000, Memory: 1 << 19})
			if err != nil {
				t.Fatal(err)
			}
			other, err := s.Compile(Demand{GPUs: 1, CPU: 2000})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetTarget([]*Request{r, other}, []float64{1, 3}); err != nil {
				t.Fatal(err)
			}
			a, err := s.NewNode(template())
			if err != nil {
				t.Fatal(err)
			}
			stB := template()
			stB.Name = "b"
			if tc.state != nil {
				tc.state(&stB)
			}
			b, err := s.NewNode(stB)
			if err != nil {
				t.Fatal(err)
			}
			if tc.change != nil && !tc.afterA {
				tc.change(t, s, b)
			}
			resA := s.Score(a, r)
			if resA.Err != nil {
				t.Fatalf("node a: %v", resA.Err)
			}
			if tc.change != nil && tc.afterA {
				tc.change(t, s, b)
			}
			got := s.Score(b, r)
			want := s.score(uncached(b), r, nil)
			got.Key, got.ScarcityCost = 0, 0
			resA.Key, resA.ScarcityCost = 0, 0
			if fmt.Sprint(want) == fmt.Sprint(resA) {
				t.Fatalf("b scores as a does (%+v): the case tells nothing apart", want)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("b's Score = %+v, fresh %+v (a's %+v)", got, want, resA)
			}
		})
	}
}

// uncached is a copy of n sharing its state, with the node's caches empty
// and the scorer's shared memo left alone (dropCaches empties that too),
// for scoring n afresh.
func uncached(n *NodeCache) *NodeCache {
	fresh := *n
	fresh.best = nil
	fresh.memo, fresh.memoRes, fresh.memoMore = nil, nil, lastMap[int32, memoFull]{}
	fresh.whole, fresh.bestOK, fresh.migMemo, fresh.mVer = lastMap[wholeKey, wholeEntry]{}, false, lastMap[migKey, migEntry]{}, 0
	return &fresh
}

// assumeDemand takes d's pod on n with a.
func assumeDemand(t *testing.T, s *Scorer, n *NodeCache, d Demand, a Assignment) {
	t.Helper()
	r, err := s.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Assume(r, a); err != nil {
		t.Fatal(err)
	}
}
