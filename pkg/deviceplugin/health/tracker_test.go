package health

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func gpuUUID(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

func migUUID(g, m int) string { return fmt.Sprintf("MIG-00000000-0000-4000-9000-%06d%06d", g, m) }

// newGPUs builds n GPUs; GPUs listed in withMIG get two MIG devices each.
func newGPUs(n int, withMIG ...int) []GPU {
	gpus := make([]GPU, n)
	for i := range gpus {
		gpus[i] = GPU{Index: i, UUID: gpuUUID(i)}
	}
	for _, i := range withMIG {
		gpus[i].MIGUUIDs = []string{migUUID(i, 0), migUUID(i, 1)}
	}
	return gpus
}

// action is one thing done to the tracker.
type action func(*Tracker) []Change

func xidEvent(index int, x uint64) action {
	return func(t *Tracker) []Change {
		return t.Observe(gpu.Event{Kind: gpu.EventXID, Index: index, UUID: gpuUUID(index), XID: x, GPUInstanceID: -1, ComputeInstanceID: -1})
	}
}

func migXID(index, gi, ci int, x uint64) action {
	return func(t *Tracker) []Change {
		return t.Observe(gpu.Event{Kind: gpu.EventXID, Index: index, UUID: gpuUUID(index), XID: x, GPUInstanceID: gi, ComputeInstanceID: ci})
	}
}

func event(e gpu.Event) action { return func(t *Tracker) []Change { return t.Observe(e) } }

func kind(index int, k gpu.EventKind) action {
	return event(gpu.Event{Kind: k, Index: index, UUID: gpuUUID(index), GPUInstanceID: -1, ComputeInstanceID: -1})
}

func observeErr(index int, err error) action {
	return func(t *Tracker) []Change { return t.ObserveError(index, err) }
}

func reset(index int) action { return func(t *Tracker) []Change { return t.ObserveReset(index) } }

func tick() action { return func(t *Tracker) []Change { return t.Tick() } }

// step advances the fake clock by after, then acts and checks the changes.
type step struct {
	after time.Duration
	do    action
	want  []Change // compared on Index, UUID and Healthy; Reason must contain want's Reason
}

func down(index int, reason string) Change {
	return Change{Index: index, UUID: gpuUUID(index), Healthy: false, Reason: reason}
}

func up(index int, reason string) Change {
	return Change{Index: index, UUID: gpuUUID(index), Healthy: true, Reason: reason}
}

func TestTracker(t *testing.T) {
	lostErr := fmt.Errorf("reading temperature of gpu 1: %w", gpu.ErrGPULost)
	tests := []struct {
		name   string
		policy Policy
		gpus   []GPU
		steps  []step
		// wantHealthy is checked at the end, by GPU or MIG UUID.
		wantHealthy map[string]bool
	}{
		{
			name: "ignored xids keep the gpu healthy",
			steps: []step{
				{do: xidEvent(0, 13)}, {do: xidEvent(0, 31)}, {do: xidEvent(0, 43)}, {do: xidEvent(0, 45)},
				{do: xidEvent(0, 68)}, {do: xidEvent(0, 94)}, {do: xidEvent(0, 109)},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true, gpuUUID(1): true},
		},
		{
			name:        "fatal xid makes only that gpu unhealthy",
			steps:       []step{{do: xidEvent(1, 79), want: []Change{down(1, "xid 79 (gpu has fallen off the bus)")}}},
			wantHealthy: map[string]bool{gpuUUID(0): true, gpuUUID(1): false},
		},
		{
			name: "xid 79 (fell off the bus) waits for a reset, not for the period",
			steps: []step{
				{do: xidEvent(0, 79), want: []Change{down(0, "xid 79 (gpu has fallen off the bus)")}},
				{after: 24 * time.Hour, do: tick()},
				{do: reset(0), want: []Change{up(0, "gpu reset detected after xid 79")}},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name:   "xid 79 makes a gpu lost even when the xid policy ignores it",
			policy: mustParse(t, "ignore=default,79;critical=48", ""),
			steps: []step{
				{do: xidEvent(1, 79), want: []Change{down(1, "xid 79")}},
				{after: 24 * time.Hour, do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true, gpuUUID(1): false},
		},
		{
			name: "recovery after the period",
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "xid 48")}},
				{after: DefaultRecoveryPeriod - time.Second, do: tick()},
				{after: time.Second, do: tick(), want: []Change{up(0, "no fatal event for 5m0s after xid 48")}},
				{after: time.Hour, do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name: "a second fatal event restarts the period",
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "xid 48")}},
				{after: 4 * time.Minute, do: xidEvent(0, 63)},
				{after: 2 * time.Minute, do: tick()},
				{after: 2*time.Minute + 59*time.Second, do: tick()},
				{after: time.Second, do: tick(), want: []Change{up(0, "after xid 63")}},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name: "an ignored xid does not restart the period",
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "xid 48")}},
				{after: 4 * time.Minute, do: xidEvent(0, 13)},
				{after: time.Minute, do: tick(), want: []Change{up(0, "")}},
			},
		},
		{
			name: "recoveries come in index order",
			gpus: newGPUs(3),
			steps: []step{
				{do: xidEvent(2, 48), want: []Change{down(2, "")}},
				{do: xidEvent(0, 48), want: []Change{down(0, "")}},
				{after: DefaultRecoveryPeriod, do: tick(), want: []Change{up(0, ""), up(2, "")}},
			},
		},
		{
			name: "reset recovers at once",
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "")}},
				{after: time.Second, do: reset(0), want: []Change{up(0, "gpu reset detected after xid 48")}},
				{do: reset(0)},
				{after: DefaultRecoveryPeriod, do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name:  "reset of a healthy gpu changes nothing",
			steps: []step{{do: reset(1)}},
		},
		{
			name: "a lost gpu waits for a reset",
			steps: []step{
				{do: kind(0, gpu.EventGPULost), want: []Change{down(0, "gpu is lost")}},
				{after: 24 * time.Hour, do: tick()},
				{do: reset(0), want: []Change{up(0, "gpu reset detected after gpu is lost")}},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name: "lost through a backend error",
			steps: []step{
				{do: observeErr(1, lostErr), want: []Change{down(1, "reading temperature of gpu 1: gpu is lost")}},
				{after: time.Hour, do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true, gpuUUID(1): false},
		},
		{
			name: "other backend errors say nothing about health",
			steps: []step{
				{do: observeErr(0, fmt.Errorf("reading power of gpu 0: %w", gpu.ErrTimeout))},
				{do: observeErr(0, gpu.ErrNotSupported)},
				{do: observeErr(0, nil)},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true},
		},
		{
			name: "a lost gpu stays lost through xids and the period",
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "xid 48")}},
				{do: kind(0, gpu.EventGPULost)},
				{after: time.Minute, do: xidEvent(0, 79)},
				{after: time.Hour, do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): false},
		},
		{
			name: "double-bit ecc is fatal, single-bit is not",
			steps: []step{
				{do: kind(0, gpu.EventECCSingleBit)},
				{do: kind(1, gpu.EventECCDoubleBit), want: []Change{down(1, "double-bit ecc error")}},
				{after: DefaultRecoveryPeriod, do: tick(), want: []Change{up(1, "")}},
			},
		},
		{
			name: "an xid in a mig instance marks the gpu and its mig devices follow",
			gpus: newGPUs(2, 0, 1),
			steps: []step{
				{do: migXID(0, 3, 0, 48), want: []Change{down(0, "xid 48 (double bit ecc error) in gpu instance 3 compute instance 0")}},
			},
			wantHealthy: map[string]bool{
				gpuUUID(0): false, migUUID(0, 0): false, migUUID(0, 1): false,
				gpuUUID(1): true, migUUID(1, 0): true, migUUID(1, 1): true,
			},
		},
		{
			name: "mig devices recover with their gpu",
			gpus: newGPUs(1, 0),
			steps: []step{
				{do: migXID(0, 1, -1, 48), want: []Change{down(0, "in gpu instance 1")}},
				{after: DefaultRecoveryPeriod, do: tick(), want: []Change{up(0, "")}},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true, migUUID(0, 0): true, migUUID(0, 1): true},
		},
		{
			name: "an event naming a mig uuid marks its gpu",
			gpus: newGPUs(2, 1),
			steps: []step{
				{do: event(gpu.Event{Kind: gpu.EventXID, Index: 1, UUID: migUUID(1, 1), XID: 62, GPUInstanceID: -1, ComputeInstanceID: -1}), want: []Change{down(1, "xid 62")}},
			},
			wantHealthy: map[string]bool{gpuUUID(1): false, migUUID(1, 0): false},
		},
		{
			name: "an event without uuid is found by index",
			steps: []step{
				{do: event(gpu.Event{Kind: gpu.EventXID, Index: 1, XID: 79, GPUInstanceID: -1, ComputeInstanceID: -1}), want: []Change{down(1, "xid 79")}},
			},
		},
		{
			name: "events for unknown gpus are ignored",
			steps: []step{
				{do: event(gpu.Event{Kind: gpu.EventXID, Index: 9, XID: 79})},
				{do: event(gpu.Event{Kind: gpu.EventXID, Index: -1, XID: 79})},
				{do: event(gpu.Event{Kind: gpu.EventGPULost, Index: 0, UUID: gpuUUID(9)})},
				{do: event(gpu.Event{Kind: gpu.EventKind(42), Index: 0, UUID: gpuUUID(0)})},
				{do: observeErr(9, gpu.ErrGPULost)},
				{do: reset(9)},
				{do: tick()},
			},
			wantHealthy: map[string]bool{gpuUUID(0): true, gpuUUID(1): true, gpuUUID(9): false, "": false},
		},
		{
			name:   "critical list: other xids are ignored",
			policy: mustParse(t, "critical=48,79", "1m"),
			steps: []step{
				{do: xidEvent(0, 62)},
				{do: xidEvent(0, 48), want: []Change{down(0, "xid 48")}},
				{after: time.Minute, do: tick(), want: []Change{up(0, "no fatal event for 1m0s")}},
			},
		},
		{
			name:   "nothing ignored",
			policy: mustParse(t, "ignore=none", ""),
			steps:  []step{{do: xidEvent(0, 13), want: []Change{down(0, "xid 13 (graphics engine exception)")}}},
		},
		{
			name:   "zero recovery period means the default",
			policy: Policy{IgnoredXIDs: map[uint64]bool{13: true}},
			steps: []step{
				{do: xidEvent(0, 48), want: []Change{down(0, "")}},
				{after: DefaultRecoveryPeriod - time.Nanosecond, do: tick()},
				{after: time.Nanosecond, do: tick(), want: []Change{up(0, "")}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakePassiveClock(t0)
			gpus := tt.gpus
			if gpus == nil {
				gpus = newGPUs(2)
			}
			policy := tt.policy
			if policy.IgnoredXIDs == nil && policy.CriticalXIDs == nil && policy.RecoveryPeriod == 0 {
				policy = DefaultPolicy()
			}
			tr := NewTracker(policy, clk, gpus)
			for i, s := range tt.steps {
				clk.SetTime(clk.Now().Add(s.after))
				got := s.do(tr)
				if !changesMatch(got, s.want) {
					t.Fatalf("step %d: changes\n%+v\nwant\n%+v", i, got, s.want)
				}
			}
			for uuid, want := range tt.wantHealthy {
				if got := tr.Healthy(uuid); got != want {
					t.Errorf("Healthy(%q) = %v, want %v", uuid, got, want)
				}
			}
		})
	}
}

func mustParse(t *testing.T, xids, period string) Policy {
	t.Helper()
	p, err := ParsePolicy(xids, period)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func changesMatch(got, want []Change) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.UUID != w.UUID || g.Healthy != w.Healthy || !strings.Contains(g.Reason, w.Reason) {
			return false
		}
	}
	return true
}

func TestTrackerState(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	tr := NewTracker(DefaultPolicy(), clk, newGPUs(2))
	state, reason, since := tr.State(0)
	if state != Healthy || reason != "" || !since.Equal(t0) {
		t.Errorf("initial State(0) = %s, %q, %v", state, reason, since)
	}
	clk.SetTime(t0.Add(time.Minute))
	tr.Observe(gpu.Event{Kind: gpu.EventXID, Index: 0, UUID: gpuUUID(0), XID: 48, GPUInstanceID: -1, ComputeInstanceID: -1})
	clk.SetTime(t0.Add(2 * time.Minute))
	tr.Observe(gpu.Event{Kind: gpu.EventXID, Index: 0, UUID: gpuUUID(0), XID: 74, GPUInstanceID: -1, ComputeInstanceID: -1})
	state, reason, since = tr.State(0)
	if state != Unhealthy || reason != "xid 74 (nvlink error)" || !since.Equal(t0.Add(time.Minute)) {
		t.Errorf("State(0) = %s, %q, %v; want Unhealthy, the last fatal xid, since the first", state, reason, since)
	}
	if state, _, _ := tr.State(7); state != "" {
		t.Errorf("State(7) of an unknown gpu = %q, want empty", state)
	}
	want := []Status{
		{Index: 0, UUID: gpuUUID(0), State: Unhealthy, Reason: "xid 74 (nvlink error)", Since: t0.Add(time.Minute)},
		{Index: 1, UUID: gpuUUID(1), State: Healthy, Since: t0},
	}
	got := tr.States()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("States() = %+v, want %+v", got, want)
	}
	tr.Observe(gpu.Event{Kind: gpu.EventGPULost, Index: 1, UUID: gpuUUID(1), GPUInstanceID: -1, ComputeInstanceID: -1})
	if got := tr.States(); got[0].Lost || !got[1].Lost || got[1].State != Unhealthy {
		t.Errorf("States() after gpu 1 was lost = %+v, want only gpu 1 lost", got)
	}
}

func TestTrackerNextRecovery(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	tr := NewTracker(DefaultPolicy(), clk, newGPUs(3))
	if _, ok := tr.NextRecovery(); ok {
		t.Error("NextRecovery with every gpu healthy reports a time")
	}
	tr.Observe(gpu.Event{Kind: gpu.EventGPULost, Index: 0, UUID: gpuUUID(0)})
	if _, ok := tr.NextRecovery(); ok {
		t.Error("NextRecovery reports a time for a lost gpu")
	}
	clk.SetTime(t0.Add(time.Minute))
	tr.Observe(gpu.Event{Kind: gpu.EventECCDoubleBit, Index: 2, UUID: gpuUUID(2)})
	clk.SetTime(t0.Add(2 * time.Minute))
	tr.Observe(gpu.Event{Kind: gpu.EventECCDoubleBit, Index: 1, UUID: gpuUUID(1)})
	at, ok := tr.NextRecovery()
	if want := t0.Add(time.Minute + DefaultRecoveryPeriod); !ok || !at.Equal(want) {
		t.Errorf("NextRecovery = %v, %v; want %v", at, ok, want)
	}
}

func TestTrackerSetGPUs(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	tr := NewTracker(DefaultPolicy(), clk, newGPUs(2, 0))
	tr.Observe(gpu.Event{Kind: gpu.EventXID, Index: 0, UUID: gpuUUID(0), XID: 48, GPUInstanceID: -1, ComputeInstanceID: -1})

	// A MIG layout change gives GPU 0 new MIG devices; GPU 1 leaves; GPU 2 arrives.
	tr.SetGPUs([]GPU{
		{Index: 0, UUID: gpuUUID(0), MIGUUIDs: []string{migUUID(0, 5)}},
		{Index: 2, UUID: gpuUUID(2)},
	})
	tests := []struct {
		uuid string
		want bool
	}{
		{gpuUUID(0), false},    // kept its state
		{migUUID(0, 5), false}, // new MIG device follows it
		{migUUID(0, 0), false}, // old MIG device forgotten: not healthy
		{gpuUUID(1), false},    // forgotten
		{gpuUUID(2), true},     // new
	}
	for _, tt := range tests {
		if got := tr.Healthy(tt.uuid); got != tt.want {
			t.Errorf("Healthy(%q) = %v, want %v", tt.uuid, got, tt.want)
		}
	}
	clk.SetTime(t0.Add(DefaultRecoveryPeriod))
	if got := tr.Tick(); len(got) != 1 || got[0].Index != 0 || !got[0].Healthy {
		t.Errorf("Tick after SetGPUs = %+v, want gpu 0 healthy", got)
	}
}

func TestTrackerCopiesInputs(t *testing.T) {
	p := DefaultPolicy()
	gpus := newGPUs(1, 0)
	tr := NewTracker(p, clocktesting.NewFakePassiveClock(t0), gpus)
	p.IgnoredXIDs[48] = true
	gpus[0].MIGUUIDs[0] = "MIG-changed"
	if got := tr.Observe(gpu.Event{Kind: gpu.EventXID, Index: 0, UUID: gpuUUID(0), XID: 48}); len(got) != 1 {
		t.Errorf("the caller's policy map changed the tracker's policy")
	}
	if tr.Healthy("MIG-changed") {
		t.Errorf("the caller's gpu slice changed the tracker's mig devices")
	}
	tr.Policy().IgnoredXIDs[79] = true
	if !tr.Policy().IsFatalXID(79) {
		t.Errorf("Policy() returned the tracker's own map")
	}
}

func TestTrackerConcurrent(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	tr := NewTracker(DefaultPolicy(), clk, newGPUs(8, 0, 1))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				idx := (w + i) % 8
				switch i % 5 {
				case 0:
					tr.Observe(gpu.Event{Kind: gpu.EventXID, Index: idx, UUID: gpuUUID(idx), XID: 79})
				case 1:
					tr.ObserveReset(idx)
				case 2:
					tr.Tick()
				case 3:
					tr.Healthy(migUUID(0, 1))
					tr.State(idx)
				case 4:
					clk.Step(time.Minute)
					tr.States()
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range tr.States() {
		if s.State != Healthy && s.State != Unhealthy {
			t.Errorf("gpu %d in state %q", s.Index, s.State)
		}
	}
}

func TestObserveErrorIs(t *testing.T) {
	// A backend wraps ErrGPULost deeply; errors.Is must still find it.
	err := fmt.Errorf("sampling: %w", errors.Join(errors.New("power"), fmt.Errorf("gpu 0: %w", gpu.ErrGPULost)))
	tr := NewTracker(DefaultPolicy(), clocktesting.NewFakePassiveClock(t0), newGPUs(1))
	if got := tr.ObserveError(0, err); len(got) != 1 || got[0].Healthy {
		t.Errorf("ObserveError(wrapped ErrGPULost) = %+v, want gpu 0 unhealthy", got)
	}
}
