package deviceplugin

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/xid"
)

// DefaultProbeInterval is how often HealthLoop rediscovers the machine
// while a GPU is lost, to see whether it answers again.
const DefaultProbeInterval = 30 * time.Second

// HealthLoop feeds a machine's device events into a health tracker and makes
// the manager re-advertise whenever a GPU changes state, including when the
// tracker's recovery period ends.
//
// A lost GPU (it fell off the bus: XID 79 or GPU_IS_LOST) sends no further
// events and does not recover with time. While one is lost, the loop
// rediscovers the machine every ProbeInterval, and at once when a lost GPU
// reports an event again; a lost GPU that the backend reads again, with the
// same UUID, has been reset (by an operator, nvidia-smi -r, or the driver)
// and the tracker is told so (ObserveReset). NVML has no "reset done" event
// to wait for instead: its GPU recovery-action events say that a reset is
// needed, not that one happened.
type HealthLoop struct {
	Events  gpu.EventSource
	Tracker *health.Tracker
	Manager *Manager
	// Clock must be the clock the tracker was built with.
	Clock clock.Clock
	// Discoverer rediscovers the machine to find lost GPUs that answer
	// again; nil never probes (a lost GPU then stays unhealthy until the
	// agent restarts).
	Discoverer gpu.Discoverer
	// ProbeInterval is how often lost GPUs are probed; default
	// DefaultProbeInterval.
	ProbeInterval time.Duration
	// OnChange, when set, is called after a GPU changed state and the
	// manager was told (the inventory publisher's Notify); it must not block.
	OnChange func()
}

// Run watches until ctx is done. It returns the event source's error if
// events cannot be watched at all.
func (h HealthLoop) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	if h.ProbeInterval <= 0 {
		h.ProbeInterval = DefaultProbeInterval
	}
	events := make(chan gpu.Event, 64)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- h.Events.WatchEvents(ctx, func(e gpu.Event) {
			select {
			case events <- e:
			case <-ctx.Done():
			}
		})
	}()
	apply := func(changes []health.Change) {
		for _, c := range changes {
			logger.Info("GPU health changed", "gpu", c.Index, "uuid", c.UUID, "healthy", c.Healthy, "reason", c.Reason)
		}
		if len(changes) > 0 {
			h.Manager.HealthChanged()
			if h.OnChange != nil {
				h.OnChange()
			}
		}
	}
	for {
		var timers []clock.Timer
		var fire, probe <-chan time.Time
		if next, ok := h.Tracker.NextRecovery(); ok {
			timer := h.Clock.NewTimer(max(next.Sub(h.Clock.Now()), 0))
			timers = append(timers, timer)
			fire = timer.C()
		}
		if h.Discoverer != nil && len(lostGPUs(h.Tracker)) > 0 {
			timer := h.Clock.NewTimer(h.ProbeInterval)
			timers = append(timers, timer)
			probe = timer.C()
		}
		stop := func() {
			for _, t := range timers {
				t.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			// Wait for the watcher so it releases NVML before the backend closes.
			if err := <-watchErr; err != nil {
				return fmt.Errorf("watching gpu events for health: %w", err)
			}
			return nil
		case e := <-events:
			_, wasLost := lostGPUs(h.Tracker)[e.Index]
			apply(h.Tracker.Observe(e))
			if wasLost && h.Discoverer != nil && e.Kind != gpu.EventGPULost && (e.Kind != gpu.EventXID || e.XID != xid.FallenOffTheBus) {
				// A lost GPU speaks again: look now rather than at the next probe.
				apply(h.probe(ctx))
			}
		case <-fire:
			apply(h.Tracker.Tick())
		case <-probe:
			apply(h.probe(ctx))
		case err := <-watchErr:
			stop()
			if err != nil {
				return fmt.Errorf("watching gpu events for health: %w", err)
			}
			return nil
		}
		stop()
	}
}

// lostGPUs returns the UUIDs of the tracker's lost GPUs by index.
func lostGPUs(t *health.Tracker) map[int]string {
	var out map[int]string
	for _, s := range t.States() {
		if s.Lost {
			if out == nil {
				out = map[int]string{}
			}
			out[s.Index] = s.UUID
		}
	}
	return out
}

// probe rediscovers the machine and reports a reset of every lost GPU that
// the backend reads again under the same UUID.
func (h HealthLoop) probe(ctx context.Context) []health.Change {
	lost := lostGPUs(h.Tracker)
	if len(lost) == 0 {
		return nil
	}
	logger := klog.FromContext(ctx)
	m, err := h.Discoverer.Discover(ctx)
	if err != nil {
		logger.V(2).Info("Rediscovering gpus to probe lost ones failed; trying again later", "err", err.Error())
		return nil
	}
	var changes []health.Change
	for _, d := range m.Devices {
		if uuid, ok := lost[d.Index]; ok && uuid == d.UUID {
			logger.Info("Lost GPU answers again", "gpu", d.Index, "uuid", d.UUID)
			changes = append(changes, h.Tracker.ObserveReset(d.Index)...)
		}
	}
	for _, f := range m.Failed {
		if _, ok := lost[f.Index]; ok {
			logger.V(4).Info("Lost GPU still does not answer", "gpu", f.Index, "err", f.Err.Error())
		}
	}
	return changes
}

// TrackedGPUs lists a machine's GPUs and their MIG devices for a health tracker.
func TrackedGPUs(m *gpu.Machine) []health.GPU {
	out := make([]health.GPU, 0, len(m.Devices))
	for _, d := range m.Devices {
		g := health.GPU{Index: d.Index, UUID: d.UUID}
		for _, md := range d.MIGDevices {
			g.MIGUUIDs = append(g.MIGUUIDs, md.UUID)
		}
		out = append(out, g)
	}
	return out
}
