package nvmlbackend_test

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// TestProcessUtilization reads per-process samples through the backend: a
// pass sees the samples newer than the previous pass's, idle processes and
// processes in MIG instances are told apart, and discovery reports each
// GPU's /dev/nvidia minor number.
func TestProcessUtilization(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m, b := newSim(t, "dgx-h100", sim.WithClock(clk))
	enableMIG(t, b, 1, "3g.40gb")
	mach, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range mach.Devices {
		if d.Minor != i {
			t.Errorf("gpu %d minor %d, want %d", i, d.Minor, i)
		}
	}
	if err := m.SetLoad(0, sim.Load{SMActive: 0.9, Processes: []sim.Process{
		{PID: 10, UsedMemoryMiB: 1000, SMUtil: 0.6, MemUtil: 0.3},
		{PID: 11, UsedMemoryMiB: 2000, SMUtil: 0.25},
	}}); err != nil {
		t.Fatal(err)
	}
	gi := mach.Devices[1].MIGDevices[0].GPUInstanceID
	if err := m.SetMIGLoad(1, gi, sim.Load{SMActive: 0.5, Processes: []sim.Process{{PID: 20, UsedMemoryMiB: 500, SMUtil: 0.5, ComputeInstanceID: -1}}}); err != nil {
		t.Fatal(err)
	}
	want := func(snap *gpu.Snapshot, pid uint32, sm, mem gpu.Opt[uint32], gi int) {
		t.Helper()
		for _, d := range snap.Devices {
			for _, p := range d.Processes {
				if p.PID != pid {
					continue
				}
				if p.SMUtilPercent != sm || p.MemUtilPercent != mem || p.GPUInstanceID != gi {
					t.Errorf("process %d: %+v, want sm %+v mem %+v gi %d", pid, p, sm, mem, gi)
				}
				return
			}
		}
		t.Errorf("process %d missing from the snapshot", pid)
	}
	snap, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want(snap, 10, gpu.Some[uint32](60), gpu.Some[uint32](30), -1)
	want(snap, 11, gpu.Some[uint32](25), gpu.Some[uint32](0), -1)
	want(snap, 20, gpu.Opt[uint32]{}, gpu.Opt[uint32]{}, gi)

	// No time passed: no newer samples, so the processes count as idle.
	snap, _ = b.Sample(ctx)
	want(snap, 10, gpu.Some[uint32](0), gpu.Some[uint32](0), -1)
	clk.SetTime(clk.Now().Add(10 * time.Second))
	snap, _ = b.Sample(ctx)
	want(snap, 10, gpu.Some[uint32](60), gpu.Some[uint32](30), -1)
}
