package nvmlbackend_test

import (
	"context"
	"testing"
)

// BenchmarkDiscoverAndSample is one full discovery plus one telemetry snapshot
// of a simulated DGX H100 with seven 1g.10gb MIG devices on each of its 8 GPUs:
// the work an agent does per refresh on a busy MIG node.
func BenchmarkDiscoverAndSample(b *testing.B) {
	ctx := context.Background()
	_, be := newSim(b, "dgx-h100")
	for i := range 8 {
		enableMIG(b, be, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	m, err := be.Discover(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if n := len(m.Devices[7].MIGDevices); n != 7 {
		b.Fatalf("gpu 7 has %d MIG devices, want 7", n)
	}
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
	_, be := newSim(b, "dgx-h100")
	for i := range 8 {
		enableMIG(b, be, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Discover(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	ctx := context.Background()
	_, be := newSim(b, "dgx-h100")
	for i := range 8 {
		enableMIG(b, be, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
