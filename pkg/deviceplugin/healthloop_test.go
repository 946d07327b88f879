package deviceplugin_test

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// TestXIDHealthThroughTheKubelet injects XIDs into a simulated machine and
// follows them, through the NVML backend's events, the health tracker and the
// device plugin, to the kubelet's allocatable count; and back on recovery.
func TestXIDHealthThroughTheKubelet(t *testing.T) {
	sm, err := sim.Open("pcie-4xl40s")
	if err != nil {
		t.Fatal(err)
	}
	b, err := nvmlbackend.New(sm.NVML(), nvmlbackend.WithEventWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mach, err := b.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	policy := health.DefaultPolicy()
	policy.RecoveryPeriod = 10 * time.Minute
	tracker := health.NewTracker(policy, clk, deviceplugin.TrackedGPUs(mach))
	m := deviceplugin.NewManager(pluginConfig(), tracker)
	if err := m.Update(mach, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	registered := sm.Calls("RegisterEvents")
	go func() { done <- deviceplugin.HealthLoop{Events: b, Tracker: tracker, Manager: m, Clock: clk}.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("HealthLoop: %v", err)
		}
	}()
	waitFor(t, "event registration", func() bool { return sm.Calls("RegisterEvents")-registered >= 4 })
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 4})

	// An application XID (13) is ignored; a fatal one (48) takes only GPU 2 out.
	if err := sm.InjectXID(1, 13); err != nil {
		t.Fatal(err)
	}
	if err := sm.InjectXID(2, 48); err != nil {
		t.Fatal(err)
	}
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 3})
	if !tracker.Healthy(mach.Devices[1].UUID) || tracker.Healthy(mach.Devices[2].UUID) {
		t.Fatalf("gpu 1 healthy=%v (ignored xid 13), gpu 2 healthy=%v (xid 48)", tracker.Healthy(mach.Devices[1].UUID), tracker.Healthy(mach.Devices[2].UUID))
	}
	// No new fatal event for the recovery period: GPU 2 comes back.
	waitFor(t, "the recovery timer", func() bool { return clk.HasWaiters() })
	clk.Step(10*time.Minute + time.Second)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 4})
}

// TestLostGPUComesBackThroughTheKubelet loses a simulated GPU (it falls off
// the bus: XID 79, then GPU_IS_LOST on every call) and resets it, and
// follows it through the health loop's probe to the kubelet's allocatable
// count: out while lost, however long, and back once it answers again.
func TestLostGPUComesBackThroughTheKubelet(t *testing.T) {
	sm, err := sim.Open("pcie-4xl40s")
	if err != nil {
		t.Fatal(err)
	}
	b, err := nvmlbackend.New(sm.NVML(), nvmlbackend.WithEventWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mach, err := b.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tracker := health.NewTracker(health.DefaultPolicy(), clk, deviceplugin.TrackedGPUs(mach))
	m := deviceplugin.NewManager(pluginConfig(), tracker)
	if err := m.Update(mach, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	registered := sm.Calls("RegisterEvents")
	const probe = time.Minute
	go func() {
		done <- deviceplugin.HealthLoop{Events: b, Tracker: tracker, Manager: m, Clock: clk, Discoverer: b, ProbeInterval: probe}.Run(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("HealthLoop: %v", err)
		}
	}()
	waitFor(t, "event registration", func() bool { return sm.Calls("RegisterEvents")-registered >= 4 })
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 4})

	if err := sm.LoseGPU(3); err != nil {
		t.Fatal(err)
	}
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 3})
	if st := tracker.States()[3]; !st.Lost || st.State != health.Unhealthy {
		t.Fatalf("gpu 3 after it fell off the bus: %+v, want lost and unhealthy", st)
	}
	// Still lost: probes find it unreadable, and the recovery period does
	// not bring it back.
	discovered := sm.Calls("SystemGetDriverVersion")
	steps := int(health.DefaultRecoveryPeriod/probe) + 1
	for range steps {
		waitFor(t, "the probe timer", func() bool { return clk.HasWaiters() })
		clk.Step(probe)
	}
	waitFor(t, "the probes", func() bool { return sm.Calls("SystemGetDriverVersion")-discovered >= steps })
	waitFor(t, "the last probe to end", func() bool { return clk.HasWaiters() })
	if tracker.Healthy(mach.Devices[3].UUID) {
		t.Fatal("gpu 3 healthy while it is still lost")
	}

	// The operator resets it: the next probe sees it answer.
	if err := sm.RecoverGPU(3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the probe timer", func() bool { return clk.HasWaiters() })
	clk.Step(probe)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 4})
	if st := tracker.States()[3]; st.Lost || st.State != health.Healthy {
		t.Errorf("gpu 3 after its reset: %+v, want healthy", st)
	}
	// Nothing is lost: no more probes.
	probes := sm.Calls("SystemGetDriverVersion")
	clk.Step(10 * probe)
	if got := sm.Calls("SystemGetDriverVersion") - probes; got != 0 {
		t.Errorf("%d rediscoveries with no GPU lost, want 0", got)
	}
}
