package telemetry

import (
	"context"
	"maps"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Reasons of the Node Events the exporter records.
const (
	ReasonFatalXID = "GPUFatalXID"
	ReasonGPULost  = "GPULost"
)

// xidKey counts XIDs per physical GPU index and code.
type xidKey struct {
	index int
	xid   uint64
}

// eccKey counts ECC events per physical GPU index and kind.
type eccKey struct {
	index int
	kind  gpu.EventKind
}

// eventCounts are the event counters since the exporter started.
type eventCounts struct {
	xids    map[xidKey]uint64
	lastXID map[int]uint64
	ecc     map[eccKey]uint64
}

type eventState struct {
	mu sync.Mutex
	c  eventCounts
}

func (s *eventState) init() {
	s.c = eventCounts{xids: map[xidKey]uint64{}, lastXID: map[int]uint64{}, ecc: map[eccKey]uint64{}}
}

// counts returns a copy for a pass.
func (s *eventState) counts() eventCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return eventCounts{xids: maps.Clone(s.c.xids), lastXID: maps.Clone(s.c.lastXID), ecc: maps.Clone(s.c.ecc)}
}

// ObserveEvent counts a device event: XIDs per GPU and code (and the last
// XID per GPU), ECC events per GPU and kind. A fatal XID, or a lost GPU, is
// also recorded as a Warning Event on the Node when a Recorder is set. It
// never blocks on I/O; the counters appear in the next snapshot.
func (e *Exporter) ObserveEvent(ev gpu.Event) {
	e.events.mu.Lock()
	switch ev.Kind {
	case gpu.EventXID:
		e.events.c.xids[xidKey{index: ev.Index, xid: ev.XID}]++
		e.events.c.lastXID[ev.Index] = ev.XID
	case gpu.EventECCSingleBit, gpu.EventECCDoubleBit:
		e.events.c.ecc[eccKey{index: ev.Index, kind: ev.Kind}]++
	}
	e.events.mu.Unlock()

	if e.opts.Recorder == nil {
		return
	}
	switch {
	case ev.Kind == gpu.EventXID && e.opts.FatalXID(ev.XID):
		e.opts.Recorder.Eventf(e.opts.Node, v1.EventTypeWarning, ReasonFatalXID,
			"GPU %d (%s) reported fatal XID %d (%s)%s", ev.Index, ev.UUID, ev.XID, xidDescription(ev.XID), where(ev))
	case ev.Kind == gpu.EventGPULost:
		e.opts.Recorder.Eventf(e.opts.Node, v1.EventTypeWarning, ReasonGPULost,
			"GPU %d (%s) stopped answering; it needs a reset", ev.Index, ev.UUID)
	}
}

// xidDescription is a short description of what an XID means, after
// NVIDIA's XID catalog, or "unknown" for an XID not in the table.
func xidDescription(xid uint64) string {
	if d := health.XIDDescription(xid); d != "" {
		return d
	}
	return "unknown"
}

func where(ev gpu.Event) string {
	if ev.GPUInstanceID < 0 {
		return ""
	}
	return " in MIG GPU instance " + strconv.Itoa(ev.GPUInstanceID)
}

// EventSource delivers device events until ctx ends; gpu.Backend satisfies it.
type EventSource = gpu.EventSource

// TeeEvents returns a source that watches src and hands every event to each
// observer, in order, before the watcher's own handler. It lets one backend
// watch feed both the health loop and the exporter:
//
//	events := telemetry.TeeEvents(backend, exporter.ObserveEvent)
//	deviceplugin.HealthLoop{Events: events, ...}
//
// Observers run on the watch goroutine and must not block.
func TeeEvents(src EventSource, observers ...func(gpu.Event)) EventSource {
	return teeSource{src: src, observers: observers}
}

type teeSource struct {
	src       EventSource
	observers []func(gpu.Event)
}

func (t teeSource) WatchEvents(ctx context.Context, handle func(gpu.Event)) error {
	return t.src.WatchEvents(ctx, func(ev gpu.Event) {
		for _, o := range t.observers {
			o(ev)
		}
		handle(ev)
	})
}
