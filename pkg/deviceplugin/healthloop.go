package deviceplugin

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// HealthLoop feeds a machine's device events into a health tracker and makes
// the manager re-advertise whenever a GPU changes state, including when the
// tracker's recovery period ends.
type HealthLoop struct {
	Events  gpu.EventSource
	Tracker *health.Tracker
	Manager *Manager
	// Clock must be the clock the tracker was built with.
	Clock clock.Clock
}

// Run watches until ctx is done. It returns the event source's error if
// events cannot be watched at all.
func (h HealthLoop) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
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
		}
	}
	for {
		var timer clock.Timer
		var fire <-chan time.Time
		if next, ok := h.Tracker.NextRecovery(); ok {
			timer = h.Clock.NewTimer(max(next.Sub(h.Clock.Now()), 0))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			// Wait for the watcher so it releases NVML before the backend closes.
			if err := <-watchErr; err != nil {
				return fmt.Errorf("watching gpu events for health: %w", err)
			}
			return nil
		case e := <-events:
			apply(h.Tracker.Observe(e))
		case <-fire:
			apply(h.Tracker.Tick())
		case err := <-watchErr:
			if timer != nil {
				timer.Stop()
			}
			if err != nil {
				return fmt.Errorf("watching gpu events for health: %w", err)
			}
			return nil
		}
		if timer != nil {
			timer.Stop()
		}
	}
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
