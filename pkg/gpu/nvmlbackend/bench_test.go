package nvmlbackend_test

import (
	"context"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
)

// busyMIGNode is a simulated DGX H100 with seven 1g.10gb MIG devices on each
// of its 8 GPUs: the busiest MIG layout a node can have.
func busyMIGNode(b *testing.B) *nvmlbackend.Backend {
	b.Helper()
	_, be := newSim(b, "dgx-h100")
	for i := range 8 {
		enableMIG(b, be, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	m, err := be.Discover(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if n := len(m.Devices[7].MIGDevices); n != 7 {
		b.Fatalf("gpu 7 has %d MIG devices, want 7", n)
	}
	return be
}

// BenchmarkDiscoverAndSample is one full discovery plus one telemetry snapshot
// of the busy MIG node: the work an agent does per refresh.
func BenchmarkDiscoverAndSample(b *testing.B) {
	ctx := context.Background()
	be := busyMIGNode(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Discover(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := be.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiscover and BenchmarkSample split the figure above.
func BenchmarkDiscover(b *testing.B) {
	ctx := context.Background()
	be := busyMIGNode(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Discover(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	ctx := context.Background()
	be := busyMIGNode(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
