package topology_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

func TestAllocate(t *testing.T) {
	all8 := span(0, 7)
	tests := []struct {
		name        string
		node        *node
		free        []int
		mustInclude []int
		k           int
		want        []int
		wantErr     string // a substring of the error; empty for none
	}{
		// 8×A100 PCIe with NVLink-bridged pairs.
		{name: "a100 pcie: 2 of 8 picks an nvlink pair", node: a100PCIe(), free: all8, k: 2, want: []int{0, 1}},
		{name: "a100 pcie: free {1,2,3}, 2 picks the nvlink pair {2,3}", node: a100PCIe(), free: []int{1, 2, 3}, k: 2, want: []int{2, 3}},
		{name: "a100 pcie: pairs broken on numa 0, 2 picks the whole pair on numa 1", node: a100PCIe(), free: []int{1, 3, 4, 5}, k: 2, want: []int{4, 5}},
		{name: "a100 pcie: no whole pair, 2 picks a same-numa pair", node: a100PCIe(), free: []int{1, 3, 4, 6}, k: 2, want: []int{1, 3}},
		{name: "a100 pcie: 4 of 8 picks two pairs on one numa node", node: a100PCIe(), free: all8, k: 4, want: []int{0, 1, 2, 3}},
		{name: "a100 pcie: 3 of 8 picks a pair and a same-numa gpu", node: a100PCIe(), free: all8, k: 3, want: []int{0, 1, 2}},
		{name: "a100 pcie: 6 of 8 picks three whole pairs", node: a100PCIe(), free: all8, k: 6, want: []int{0, 1, 2, 3, 4, 5}},
		{name: "a100 pcie: 1 gpu after gpu 0 is taken picks its orphaned partner", node: a100PCIe(), free: span(1, 7), k: 1, want: []int{1}},
		{name: "a100 pcie: 1 gpu picks the orphan, not a gpu of a whole pair", node: a100PCIe(), free: []int{0, 1, 2, 3, 5, 6, 7}, k: 1, want: []int{5}},
		{name: "a100 pcie: mustInclude 3 gets its nvlink partner", node: a100PCIe(), free: all8, mustInclude: []int{3}, k: 2, want: []int{2, 3}},
		{name: "a100 pcie: mustInclude across pairs is honoured", node: a100PCIe(), free: all8, mustInclude: []int{1, 6}, k: 2, want: []int{1, 6}},
		{name: "a100 pcie: mustInclude 5 with 4 completes numa 1", node: a100PCIe(), free: all8, mustInclude: []int{5}, k: 4, want: []int{4, 5, 6, 7}},

		// DGX H100: NVSwitch all-to-all, PCIe switch pairs, two NUMA nodes.
		{name: "dgx h100: 2 of 8 picks a pcie switch pair", node: dgxH100(), free: all8, k: 2, want: []int{0, 1}},
		{name: "dgx h100: the second pair completes numa node 0, keeping numa 1 whole", node: dgxH100(), free: span(2, 7), k: 2, want: []int{2, 3}},
		{name: "dgx h100: 4 of 8 picks one numa node", node: dgxH100(), free: all8, k: 4, want: []int{0, 1, 2, 3}},
		{name: "dgx h100: 4 of 6 free picks the whole numa node", node: dgxH100(), free: []int{0, 2, 4, 5, 6, 7}, k: 4, want: []int{4, 5, 6, 7}},
		{name: "dgx h100: 8 of 8", node: dgxH100(), free: all8, k: 8, want: all8},
		{name: "dgx h100 fragmented: 1 gpu picks an orphan, keeping whole pairs", node: dgxH100(), free: []int{0, 1, 2, 4, 5, 6}, k: 1, want: []int{2}},
		{name: "dgx h100 fragmented: 2 picks a whole switch pair, not two orphans", node: dgxH100(), free: []int{0, 2, 4, 5}, k: 2, want: []int{4, 5}},
		{name: "dgx h100 fragmented: 2 from orphans stays on one numa node", node: dgxH100(), free: []int{0, 3, 5, 6}, k: 2, want: []int{0, 3}},
		{name: "dgx h100: mustInclude 0 with 3 stays on numa node 0", node: dgxH100(), free: all8, mustInclude: []int{0}, k: 3, want: []int{0, 1, 2}},

		// 4×L40S, two NUMA nodes, one PCIe switch each.
		{name: "l40s: 2 of 4 picks a same-numa pair", node: l40s(), free: span(0, 3), k: 2, want: []int{0, 1}},
		{name: "l40s: free {1,2,3}, 2 picks the pair {2,3}", node: l40s(), free: []int{1, 2, 3}, k: 2, want: []int{2, 3}},
		{name: "l40s: 1 of {0,1,2} picks 2, keeping the pair {0,1}", node: l40s(), free: []int{0, 1, 2}, k: 1, want: []int{2}},
		{name: "l40s: mustInclude 1 with only numa 1 partners", node: l40s(), free: []int{1, 2, 3}, mustInclude: []int{1}, k: 2, want: []int{1, 2}},
		{name: "l40s: 3 of 4", node: l40s(), free: span(0, 3), k: 3, want: []int{0, 1, 2}},

		// NVLink outranks a shared PCIe switch.
		{name: "crossed: nvlink beats a pcie switch pair", node: crossed(), free: span(0, 3), k: 2, want: []int{0, 2}},
		{name: "crossed: free {0,1,3}, 2 picks the nvlink pair {1,3}", node: crossed(), free: []int{0, 1, 3}, k: 2, want: []int{1, 3}},

		// 16 GPUs.
		{name: "dgx-2: 8 of 16 picks one baseboard", node: dgx2(), free: span(0, 15), k: 8, want: span(0, 7)},
		{name: "dgx-2: 4 of 16 picks one upstream switch", node: dgx2(), free: span(0, 15), k: 4, want: []int{0, 1, 2, 3}},
		{name: "pcie16: 8 of 16 picks four pairs on one numa node", node: pcie16(), free: span(0, 15), k: 8, want: span(0, 7)},

		// Past the exhaustive limit (C(24,8) = 735471): the greedy search.
		{name: "24 gpus: 8 picks one nvswitch island", node: islands(3), free: span(0, 23), k: 8, want: span(0, 7)},
		{name: "24 gpus: 8 picks the only whole island", node: islands(3), free: append(span(1, 7), span(9, 23)...), k: 8, want: span(16, 23)},
		{name: "24 gpus: 12 picks a whole island and four of the next", node: islands(3), free: span(0, 23), k: 12, want: span(0, 11)},

		// Order of the input does not matter.
		{name: "free in any order", node: a100PCIe(), free: []int{7, 3, 2, 1}, k: 2, want: []int{2, 3}},

		// Bad input.
		{name: "k 0", node: dgxH100(), free: all8, k: 0, wantErr: "requested 0 gpus, want at least 1"},
		{name: "k negative", node: dgxH100(), free: all8, k: -2, wantErr: "requested -2 gpus"},
		{name: "k over free", node: dgxH100(), free: []int{0, 1, 2}, k: 4, wantErr: "requested 4 gpus, 3 free [0 1 2]"},
		{name: "mustInclude not free", node: dgxH100(), free: []int{0, 1, 2}, mustInclude: []int{1, 5}, k: 2, wantErr: "mustInclude gpus [5] are not free"},
		{name: "mustInclude over k", node: dgxH100(), free: all8, mustInclude: []int{0, 1, 2}, k: 2, wantErr: "mustInclude has 3 gpus [0 1 2], more than the 2 requested"},
		{name: "unknown free position", node: dgxH100(), free: []int{0, 8}, k: 1, wantErr: "free lists gpu position 8, the node has positions 0 to 7"},
		{name: "negative free position", node: dgxH100(), free: []int{-1}, k: 1, wantErr: "free lists gpu position -1"},
		{name: "unknown mustInclude position", node: dgxH100(), free: all8, mustInclude: []int{9}, k: 1, wantErr: "mustInclude lists gpu position 9"},
		{name: "repeated free position", node: dgxH100(), free: []int{0, 3, 3}, k: 2, wantErr: "free lists gpu position 3 twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.node.allocator(t)
			got, err := a.Allocate(tc.free, tc.mustInclude, tc.k)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Allocate(%v, %v, %d) = %v, %v; want error containing %q", tc.free, tc.mustInclude, tc.k, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate(%v, %v, %d): %v", tc.free, tc.mustInclude, tc.k, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Allocate(%v, %v, %d) = %v, want %v", tc.free, tc.mustInclude, tc.k, got, tc.want)
			}
			// Same input, same output, and the best quality is what was chosen.
			again, err := a.Allocate(tc.free, tc.mustInclude, tc.k)
			if err != nil || !slices.Equal(again, got) {
				t.Errorf("second Allocate = %v, %v; want %v", again, err, got)
			}
			q, err := a.Quality(got)
			if err != nil {
				t.Fatal(err)
			}
			bq, err := a.BestQuality(tc.free, tc.mustInclude, tc.k)
			if err != nil || bq != q {
				t.Errorf("BestQuality = %v, %v; want the chosen set's %v", bq, err, q)
			}
		})
	}
}

func TestAllocateInsufficientIsTyped(t *testing.T) {
	a := l40s().allocator(t)
	if _, err := a.Allocate([]int{0}, nil, 2); !errors.Is(err, topology.ErrInsufficient) {
		t.Errorf("Allocate 2 of 1 free: %v, want an error wrapping ErrInsufficient", err)
	}
	if _, err := a.Allocate([]int{0}, nil, 0); errors.Is(err, topology.ErrInsufficient) {
		t.Errorf("Allocate 0: %v, want a plain invalid-input error", err)
	}
}

func TestQuality(t *testing.T) {
	tests := []struct {
		name    string
		node    *node
		set     []int
		want    topology.Quality
		wantErr string
	}{
		{name: "a100 pcie: two pairs on numa 0", node: a100PCIe(), set: []int{0, 1, 2, 3},
			want: topology.Quality{Size: 4, MinNVLinks: 0, NVLinks: 24, PCIe: gpu.PathSameCPU, NUMANodes: 1}},
		{name: "a100 pcie: one pair", node: a100PCIe(), set: []int{1, 0},
			want: topology.Quality{Size: 2, MinNVLinks: 12, NVLinks: 12, PCIe: gpu.PathSameCPU, NUMANodes: 1}},
		{name: "dgx h100: whole machine", node: dgxH100(), set: span(0, 7),
			want: topology.Quality{Size: 8, MinNVLinks: 18, NVLinks: 28 * 18, PCIe: gpu.PathCrossCPU, NUMANodes: 2}},
		{name: "l40s: single gpu", node: l40s(), set: []int{2},
			want: topology.Quality{Size: 1, PCIe: gpu.PathSame, NUMANodes: 1}},
		{name: "empty set", node: l40s(), set: nil, wantErr: "empty set"},
		{name: "unknown position", node: l40s(), set: []int{4}, wantErr: "set lists gpu position 4, the node has positions 0 to 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.node.allocator(t).Quality(tc.set)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Quality(%v) = %v, %v; want error containing %q", tc.set, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Quality(%v) = %+v, %v; want %+v", tc.set, got, err, tc.want)
			}
		})
	}
}

func TestQualityCompare(t *testing.T) {
	base := topology.Quality{Size: 2, MinNVLinks: 12, NVLinks: 12, PCIe: gpu.PathSameCPU, NUMANodes: 1}
	tests := []struct {
		name   string
		change func(*topology.Quality)
		want   int // sign of changed.Compare(base)
	}{
		{name: "equal", change: func(*topology.Quality) {}, want: 0},
		{name: "stronger weakest pair wins over everything else", change: func(q *topology.Quality) {
			q.MinNVLinks, q.NVLinks, q.PCIe, q.NUMANodes = 13, 0, gpu.PathCrossCPU, 2
		}, want: 1},
		{name: "more nvlinks win over pcie", change: func(q *topology.Quality) { q.NVLinks, q.PCIe = 24, gpu.PathCrossCPU }, want: 1},
		{name: "closer pcie path wins over numa", change: func(q *topology.Quality) { q.PCIe, q.NUMANodes = gpu.PathSingleSwitch, 2 }, want: 1},
		{name: "unknown path is worst", change: func(q *topology.Quality) { q.PCIe = gpu.PathUnknown }, want: -1},
		{name: "more numa nodes lose", change: func(q *topology.Quality) { q.NUMANodes = 2 }, want: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := base
			tc.change(&q)
			got := q.Compare(base)
			if sign(got) != tc.want || sign(base.Compare(q)) != -tc.want || q.Better(base) != (tc.want > 0) {
				t.Errorf("%+v.Compare(%+v) = %d, want sign %d (and the reverse)", q, base, got, tc.want)
			}
		})
	}
}

func sign(x int) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

func TestNew(t *testing.T) {
	asym := gpu.NewTopology(2)
	asym.Links[0][1] = gpu.Link{NVLinks: 4, PCIe: gpu.PathSingleSwitch}
	asym.Links[1][0] = gpu.Link{NVLinks: 2, PCIe: gpu.PathSingleSwitch}
	tests := []struct {
		name    string
		topo    gpu.Topology
		numa    []int
		wantErr string
	}{
		{name: "dgx h100", topo: dgxH100().t, numa: dgxH100().numa},
		{name: "no numa known", topo: dgxH100().t},
		{name: "empty node", topo: gpu.NewTopology(0)},
		{name: "asymmetric", topo: asym, wantErr: "invalid topology: topology is not symmetric at [0][1]"},
		{name: "numa length", topo: l40s().t, numa: []int{0, 1}, wantErr: "numa lists 2 gpus, topology has 4"},
		{name: "numa value", topo: l40s().t, numa: []int{0, 0, -2, 1}, wantErr: "gpu 2 has numa node -2"},
		{name: "too many gpus", topo: gpu.NewTopology(65), wantErr: "topology has 65 gpus, at most 64 are supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := topology.New(tc.topo, tc.numa)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestAllocateIsBest checks the search against brute force on random free
// sets: the chosen set is valid and no set of the request ranks better. With
// the search limit at 1 the greedy fallback must still return a valid set.
func TestAllocateIsBest(t *testing.T) {
	nodes := map[string]*node{"dgx-h100": dgxH100(), "a100-pcie": a100PCIe(), "l40s": l40s(), "crossed": crossed(), "dgx-2": dgx2(), "pcie16": pcie16()}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, n := range nodes {
		exact := n.allocator(t)
		greedy := n.allocator(t, topology.WithSearchLimit(1))
		size := len(n.numa)
		for range 40 {
			var free []int
			for i := range size {
				if rng.IntN(3) > 0 {
					free = append(free, i)
				}
			}
			if len(free) == 0 {
				continue
			}
			k := 1 + rng.IntN(len(free))
			var must []int
			if rng.IntN(2) == 0 {
				must = []int{free[rng.IntN(len(free))]}
			}
			got, err := exact.Allocate(free, must, k)
			if err != nil {
				t.Fatalf("%s: Allocate(%v, %v, %d): %v", name, free, must, k, err)
			}
			checkSet(t, name, got, free, must, k)
			want := bruteBest(t, exact, free, must, k)
			if q, _ := exact.Quality(got); q != want {
				t.Errorf("%s: Allocate(%v, %v, %d) = %v of quality %v, brute force finds %v", name, free, must, k, got, q, want)
			}
			g, err := greedy.Allocate(free, must, k)
			if err != nil {
				t.Fatalf("%s: greedy Allocate(%v, %v, %d): %v", name, free, must, k, err)
			}
			checkSet(t, name+" greedy", g, free, must, k)
		}
	}
}

// TestAllocateIsBestOnRandomTopologies stresses the search bounds with
// irregular machines: random NVLink counts, PCIe paths and NUMA nodes.
func TestAllocateIsBestOnRandomTopologies(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		n := randomNode(rng, 2+rng.IntN(9))
		a := n.allocator(t)
		var free []int
		for i := range n.numa {
			if rng.IntN(4) > 0 {
				free = append(free, i)
			}
		}
		if len(free) == 0 {
			continue
		}
		k := 1 + rng.IntN(len(free))
		var must []int
		if rng.IntN(3) == 0 {
			must = []int{free[rng.IntN(len(free))]}
		}
		got, err := a.Allocate(free, must, k)
		if err != nil {
			t.Fatalf("Allocate(%v, %v, %d): %v", free, must, k, err)
		}
		checkSet(t, "random", got, free, must, k)
		if q, want := quality(t, a, got), bruteBest(t, a, free, must, k); q != want {
			t.Errorf("random node %+v: Allocate(%v, %v, %d) = %v of quality %v, brute force finds %v", n, free, must, k, got, q, want)
		}
	}
}

func randomNode(rng *rand.Rand, size int) *node {
	numa := make([]int, size)
	for i := range numa {
		numa[i] = rng.IntN(3) - 1
	}
	n := newNode(numa...)
	for i := range size {
		for j := i + 1; j < size; j++ {
			l := gpu.Link{PCIe: gpu.PCIePath(1 + rng.IntN(int(gpu.PathUnknown)))}
			if rng.IntN(2) == 0 {
				l.NVLinks = rng.IntN(19)
			}
			n.t.Set(i, j, l)
		}
	}
	return n
}

func quality(t *testing.T, a *topology.Allocator, set []int) topology.Quality {
	t.Helper()
	q, err := a.Quality(set)
	if err != nil {
		t.Fatalf("Quality(%v): %v", set, err)
	}
	return q
}

func checkSet(t *testing.T, name string, got, free, must []int, k int) {
	t.Helper()
	if len(got) != k || !slices.IsSorted(got) {
		t.Errorf("%s: got %v for %d gpus, want %d ascending positions", name, got, k, k)
	}
	for _, p := range got {
		if !slices.Contains(free, p) {
			t.Errorf("%s: got %v, gpu %d is not free (%v)", name, got, p, free)
		}
	}
	for _, p := range must {
		if !slices.Contains(got, p) {
			t.Errorf("%s: got %v without mustInclude gpu %d", name, got, p)
		}
	}
}

// bruteBest ranks every k-subset of free containing must.
func bruteBest(t *testing.T, a *topology.Allocator, free, must []int, k int) topology.Quality {
	t.Helper()
	var best topology.Quality
	have := false
	var rec func(from int, set []int)
	rec = func(from int, set []int) {
		if len(set) == k {
			for _, m := range must {
				if !slices.Contains(set, m) {
					return
				}
			}
			q, err := a.Quality(set)
			if err != nil {
				t.Fatal(err)
			}
			if !have || q.Better(best) {
				best, have = q, true
			}
			return
		}
		for i := from; i < len(free); i++ {
			rec(i+1, append(set, free[i]))
		}
	}
	rec(0, nil)
	return best
}

func TestLookahead(t *testing.T) {
	// On the DGX H100 with gpus 6 and 7 taken, the pcie switch pairs {0,1},
	// {2,3} and {4,5} rank the same. Taking {4,5} leaves numa node 0 whole
	// for a request of 4 GPUs; looking ahead only at pairs, they tie and the
	// lowest positions win.
	free := span(0, 5)
	for _, tc := range []struct {
		name string
		la   []int
		want []int
	}{
		{name: "default (8, 4, 2)", la: nil, want: []int{4, 5}},
		{name: "quads", la: []int{4}, want: []int{4, 5}},
		{name: "pairs only", la: []int{2}, want: []int{0, 1}},
		{name: "sizes below 2 are ignored: the requested size only", la: []int{0, 1}, want: []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []topology.Option
			if tc.la != nil {
				opts = append(opts, topology.WithLookahead(tc.la...))
			}
			got, err := dgxH100().allocator(t, opts...).Allocate(free, nil, 2)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Allocate = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestForMachine(t *testing.T) {
	n := l40s()
	m := &gpu.Machine{Topology: n.t}
	for i, numa := range n.numa {
		m.Devices = append(m.Devices, gpu.Device{Index: i, NUMANode: numa})
	}
	a, err := topology.ForMachine(m)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Allocate([]int{1, 2, 3}, nil, 2); err != nil || !slices.Equal(got, []int{2, 3}) {
		t.Errorf("Allocate = %v, %v; want [2 3]", got, err)
	}
	m.Devices = m.Devices[:3]
	if _, err := topology.ForMachine(m); err == nil || !strings.Contains(err.Error(), "machine has 3 devices but a topology of 4") {
		t.Errorf("ForMachine with a short device list: %v", err)
	}
}
