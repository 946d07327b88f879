package deviceplugin_test

import (
	"context"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// minXIDEvents is the fewest events a BenchmarkXIDToKubelet run measures,
// whatever b.N is, so that its p99 means something.
const minXIDEvents = 100

// BenchmarkXIDToKubelet measures how long a fatal XID takes to reach the
// kubelet, through the real path: the simulated driver's event set, the
// NVML backend's event watch (its default wait), the health loop and
// tracker, the device plugin's ListAndWatch stream, and the kubelet's own
// device manager, whose allocatable count drops when it has taken the
// update in. Each event is followed by the recovery period passing on a
// fake clock, and the kubelet seeing the GPU healthy again, before the next
// XID (GPUs in turn). It reports the latency's p50 and p99 over at least
// minXIDEvents events (target p99 <= 1 s), and the recovery's (from the
// clock step to the kubelet).
//
//	go test -run '^$' -bench BenchmarkXIDToKubelet -benchtime 200x ./pkg/deviceplugin/
func BenchmarkXIDToKubelet(b *testing.B) {
	sm, err := sim.Open("pcie-4xl40s")
	if err != nil {
		b.Fatal(err)
	}
	backend, err := nvmlbackend.New(sm.NVML()) // the agent's default event wait
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	mach, err := backend.Discover(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	policy := health.DefaultPolicy()
	tracker := health.NewTracker(policy, clk, deviceplugin.TrackedGPUs(mach))
	m := deviceplugin.NewManager(pluginConfig(), tracker)
	if err := m.Update(mach, deviceplugin.Options{}); err != nil {
		b.Fatal(err)
	}
	k := startKubelet(b)
	runPlugin(b, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	registered := sm.Calls("RegisterEvents")
	go func() {
		done <- deviceplugin.HealthLoop{Events: backend, Tracker: tracker, Manager: m, Clock: clk}.Run(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("HealthLoop: %v", err)
		}
	}()
	gpus := int64(len(mach.Devices))
	waitFor(b, "event registration", func() bool { return sm.Calls("RegisterEvents")-registered >= len(mach.Devices) })
	k.waitAllocatable(b, map[string]int64{"nvidia.com/gpu": gpus})

	allocatable := func() int64 {
		_, a := k.capacity()
		return a["nvidia.com/gpu"]
	}
	// until polls cond tightly: the wait is what is measured.
	until := func(what string, cond func() bool) time.Duration {
		begin := time.Now()
		deadline := begin.Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(50 * time.Microsecond) // the poll interval bounds the measurement's resolution
		}
		return time.Since(begin)
	}
	events := max(b.N, minXIDEvents)
	toUnhealthy := make([]time.Duration, 0, events)
	toHealthy := make([]time.Duration, 0, events)
	b.ResetTimer()
	for i := range events {
		g := i % len(mach.Devices)
		begin := time.Now()
		if err := sm.InjectXID(g, 48); err != nil {
			b.Fatal(err)
		}
		until("the kubelet to see the XID", func() bool { return allocatable() == gpus-1 })
		toUnhealthy = append(toUnhealthy, time.Since(begin))

		until("the recovery timer", clk.HasWaiters)
		begin = time.Now()
		clk.Step(policy.RecoveryPeriod + time.Second)
		until("the kubelet to see the recovery", func() bool { return allocatable() == gpus })
		toHealthy = append(toHealthy, time.Since(begin))
	}
	b.StopTimer()
	ms := func(ds []time.Duration, q float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(events), "events")
	b.ReportMetric(ms(toUnhealthy, 0.50), "p50-ms")
	b.ReportMetric(ms(toUnhealthy, 0.99), "p99-ms")
	b.ReportMetric(ms(toHealthy, 0.50), "recovery-p50-ms")
	b.ReportMetric(ms(toHealthy, 0.99), "recovery-p99-ms")
}
