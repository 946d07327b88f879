package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// collector turns one pass into metric families. Each lives in its own
// collect_*.go file. Update must only read p; it writes to its own builder,
// which is merged into the snapshot only if Update returns in time.
type collector interface {
	Name() string
	Update(ctx context.Context, p *pass, b *builder) error
}

// allCollectors lists the collectors o asks for, in the order their
// meta-metrics appear.
func allCollectors(o Options) []collector {
	cs := []collector{
		clocksCollector{},
		temperatureCollector{},
		powerCollector{},
		utilizationCollector{},
		memoryCollector{},
		errorsCollector{},
		nvlinkCollector{},
		profCollector{},
		xidCollector{},
		healthCollector{},
		devicesCollector{},
		migCollector{},
		podsCollector{},
	}
	if o.Processes != nil {
		cs = append(cs, podUsageCollector{})
	}
	return cs
}

// stageResult is how one stage of a pass went.
type stageResult struct {
	name     string
	duration time.Duration
	err      error
}

var (
	collectorDurationDesc = gaugeDesc("tessera_collector_duration_seconds",
		"Duration of the collector's last run (collector=sample is the backend's telemetry pass over every GPU).")
	collectorSuccessDesc = gaugeDesc("tessera_collector_success",
		"1 if the collector's last run succeeded, 0 if it failed or ran past the collection timeout (its metrics are absent or from an earlier sample).")
	snapshotTimestampDesc = gaugeDesc("tessera_telemetry_snapshot_timestamp_seconds",
		"Unix time of the collection pass that produced the metrics being served.")
)

// runCollectors runs every collector concurrently on p, each into its own
// builder, and merges those that finish within Timeout into b. A collector
// that is still running at the deadline is reported failed and its output
// discarded; the pass does not wait for it.
func (e *Exporter) runCollectors(ctx context.Context, p *pass, b *builder) []stageResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(e.collectors)
	var (
		mu       sync.Mutex
		results  = make([]stageResult, n)
		outs     = make([]*builder, n)
		finished = make([]bool, n)
		closed   bool // set at the deadline: later results are dropped
	)
	allDone := make(chan struct{})
	remaining := n
	for i, c := range e.collectors {
		go func() {
			out := newBuilder()
			start := e.opts.Clock.Now()
			err := safeUpdate(ctx, c, p, out)
			res := stageResult{name: c.Name(), duration: e.opts.Clock.Since(start), err: err}
			mu.Lock()
			if !closed {
				results[i], outs[i], finished[i] = res, out, true
				remaining--
				if remaining == 0 {
					close(allDone)
				}
			}
			mu.Unlock()
			if e.collectorDone != nil {
				e.collectorDone(c.Name())
			}
		}()
	}
	timer := e.opts.Clock.NewTimer(e.opts.Timeout)
	defer timer.Stop()
	select {
	case <-allDone:
	case <-timer.C():
	}
	mu.Lock()
	defer mu.Unlock()
	closed = true
	for i, c := range e.collectors {
		if !finished[i] {
			results[i] = stageResult{name: c.Name(), duration: e.opts.Timeout,
				err: fmt.Errorf("collector %s: %w (%s)", c.Name(), errStillRunning, e.opts.Timeout)}
			continue
		}
		// A collector that failed keeps what it produced before failing.
		b.merge(outs[i])
	}
	return results
}

// safeUpdate runs c.Update, turning a panic into an error so that one
// broken collector does not take the agent down.
func safeUpdate(ctx context.Context, c collector, p *pass, out *builder) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("collector %s panicked: %v", c.Name(), r)
		}
	}()
	return c.Update(ctx, p, out)
}

func addStageMetrics(b *builder, stages []stageResult) {
	for _, s := range stages {
		ls := labels{label("collector", s.name)}
		b.gauge(&collectorDurationDesc, ls, s.duration.Seconds())
		ok := 1.0
		if s.err != nil {
			ok = 0
		}
		b.gauge(&collectorSuccessDesc, ls, ok)
	}
}
