package topology_test

import (
	"testing"

	"github.com/tessera-gpu/tessera/pkg/topology"
)

// The scheduler calls BestQuality in Score and Allocate in Reserve; the device
// plugin calls Allocate in GetPreferredAllocation. BenchmarkQuality, ranking
// one given 8-GPU set, is the baseline to read the others against.

type allocBench struct {
	name string
	node *node
	free []int
	k    int
}

func allocBenches() []allocBench {
	return []allocBench{
		{name: "4-of-8/dgx-h100", node: dgxH100(), free: span(0, 7), k: 4},
		{name: "4-of-8/a100-pcie", node: a100PCIe(), free: span(0, 7), k: 4},
		{name: "2-of-6/dgx-h100-fragmented", node: dgxH100(), free: []int{0, 2, 3, 4, 5, 7}, k: 2},
		{name: "8-of-16/dgx-2", node: dgx2(), free: span(0, 15), k: 8},
		{name: "8-of-16/pcie16", node: pcie16(), free: span(0, 15), k: 8},
		{name: "8-of-24/islands-greedy", node: islands(3), free: span(0, 23), k: 8},
	}
}

func BenchmarkQuality(b *testing.B) {
	a := dgx2().allocator(b)
	set := span(0, 7)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Quality(set); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllocate(b *testing.B) {
	for _, bc := range allocBenches() {
		b.Run(bc.name, func(b *testing.B) {
			a := bc.node.allocator(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Allocate(bc.free, nil, bc.k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBestQuality(b *testing.B) {
	for _, bc := range allocBenches() {
		b.Run(bc.name, func(b *testing.B) {
			a := bc.node.allocator(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.BestQuality(bc.free, nil, bc.k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPickShareGPU is 8 GPUs × 10 share units each, partly used.
func BenchmarkPickShareGPU(b *testing.B) {
	gpus := shared(10, 10, 3, 7, 10, 1, 10, 4, 9)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := topology.PickShareGPU(gpus, 3, topology.SharePacked); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickMIGDevice is a 56-slice node: 8 H100s × seven 1g.10gb, partly used.
func BenchmarkPickMIGDevice(b *testing.B) {
	var gpus []topology.MIGGPU
	for i := range 8 {
		gpus = append(gpus, h100With(1, sevenOnes, sevenOnes[:i%4]...))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := topology.PickMIGDevice(gpus); err != nil {
			b.Fatal(err)
		}
	}
}
