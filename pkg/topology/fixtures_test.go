package topology_test

import (
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// node builds a machine's link matrix and NUMA nodes for a test. A new node's
// GPUs reach each other through the CPU: NODE within a NUMA node, SYS across.
type node struct {
	t    gpu.Topology
	numa []int
}

func newNode(numa ...int) *node {
	n := &node{t: gpu.NewTopology(len(numa)), numa: numa}
	for i := range numa {
		for j := range numa {
			if i == j {
				continue
			}
			p := gpu.PathCrossCPU
			if numa[i] == numa[j] {
				p = gpu.PathSameCPU
			}
			n.t.Links[i][j].PCIe = p
		}
	}
	return n
}

// pcie sets the PCIe path between every two GPUs of each group.
func (n *node) pcie(p gpu.PCIePath, groups ...[]int) *node {
	n.each(groups, func(l *gpu.Link) { l.PCIe = p })
	return n
}

// nvlink joins every two GPUs of each group with links NVLinks.
func (n *node) nvlink(links int, nvswitch bool, groups ...[]int) *node {
	n.each(groups, func(l *gpu.Link) { l.NVLinks, l.NVSwitch = links, nvswitch })
	return n
}

func (n *node) each(groups [][]int, f func(*gpu.Link)) {
	for _, g := range groups {
		for _, i := range g {
			for _, j := range g {
				if i != j {
					f(&n.t.Links[i][j])
				}
			}
		}
	}
}

func (n *node) allocator(tb testing.TB, opts ...topology.Option) *topology.Allocator {
	tb.Helper()
	a, err := topology.New(n.t, n.numa, opts...)
	if err != nil {
		tb.Fatalf("topology.New: %v", err)
	}
	return a
}

func span(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// dgxH100 is a DGX H100: 8 GPUs on an NVSwitch fabric with 18 NVLinks each,
// PCIe switches shared by pairs, two NUMA nodes.
func dgxH100() *node {
	return newNode(0, 0, 0, 0, 1, 1, 1, 1).
		nvlink(18, true, span(0, 7)).
		pcie(gpu.PathSingleSwitch, []int{0, 1}, []int{2, 3}, []int{4, 5}, []int{6, 7})
}

// a100PCIe is an 8×A100 PCIe server with NVLink bridges (NV12) joining pairs
// that sit on different PCIe switches: NODE within a NUMA node, SYS across.
func a100PCIe() *node {
	return newNode(0, 0, 0, 0, 1, 1, 1, 1).
		nvlink(12, false, []int{0, 1}, []int{2, 3}, []int{4, 5}, []int{6, 7})
}

// l40s is a two-socket server with four L40S, one PCIe switch per socket.
func l40s() *node {
	return newNode(0, 0, 1, 1).pcie(gpu.PathSingleSwitch, []int{0, 1}, []int{2, 3})
}

// crossed has NVLink bridges across PCIe switches: bridges [0,2] and [1,3],
// switches [0,1] and [2,3].
func crossed() *node {
	return newNode(0, 0, 0, 0).
		nvlink(12, false, []int{0, 2}, []int{1, 3}).
		pcie(gpu.PathSingleSwitch, []int{0, 1}, []int{2, 3})
}

// dgx2 is a 16-GPU NVSwitch machine in the shape of a DGX-2: two baseboards of
// eight on two NUMA nodes, pairs under a PCIe switch, quads under a common
// upstream switch.
func dgx2() *node {
	n := newNode(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1).nvlink(6, true, span(0, 15))
	for q := 0; q < 16; q += 4 {
		n.pcie(gpu.PathMultiSwitch, span(q, q+3))
		n.pcie(gpu.PathSingleSwitch, []int{q, q + 1}, []int{q + 2, q + 3})
	}
	return n
}

// pcie16 is a 16-GPU PCIe machine with NVLink-bridged pairs and no fabric:
// the least symmetric shape, with many sets that tie.
func pcie16() *node {
	n := newNode(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
	for p := 0; p < 16; p += 2 {
		n.nvlink(12, false, []int{p, p + 1})
	}
	for q := 0; q < 16; q += 4 {
		n.pcie(gpu.PathHostBridge, span(q, q+3))
	}
	return n
}

// islands is a node of count 8-GPU NVSwitch islands with no NVLink between
// islands, each island on its own NUMA node: large enough that requests for
// many GPUs go past the exhaustive search limit.
func islands(count int) *node {
	numa := make([]int, 8*count)
	for i := range numa {
		numa[i] = i / 8
	}
	n := newNode(numa...)
	for i := range count {
		n.nvlink(18, true, span(8*i, 8*i+7))
		n.pcie(gpu.PathSingleSwitch, []int{8 * i, 8*i + 1}, []int{8*i + 2, 8*i + 3}, []int{8*i + 4, 8*i + 5}, []int{8*i + 6, 8*i + 7})
	}
	return n
}
