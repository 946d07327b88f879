package gpu

import (
	"context"
	"fmt"
	"time"
)

// EventKind classifies a device event.
type EventKind int

// Device event kinds a backend delivers.
const (
	EventXID EventKind = iota + 1
	EventECCSingleBit
	EventECCDoubleBit
	// EventGPULost is synthesised by a backend when a device stops answering.
	EventGPULost
)

func (k EventKind) String() string {
	switch k {
	case EventXID:
		return "xid"
	case EventECCSingleBit:
		return "ecc-single-bit"
	case EventECCDoubleBit:
		return "ecc-double-bit"
	case EventGPULost:
		return "gpu-lost"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event is something a GPU reported.
type Event struct {
	Kind  EventKind
	Time  time.Time
	Index int    // physical GPU index
	UUID  string // physical GPU UUID
	// XID is the XID code for EventXID.
	XID uint64
	// GPUInstanceID and ComputeInstanceID locate the event inside a MIG GPU; -1 when it concerns the whole GPU.
	GPUInstanceID     int
	ComputeInstanceID int
}

// TeeEvents returns a source that watches src and hands every event to each
// observer, in order, before the watcher's own handler. It lets one backend
// watch feed several consumers (the health loop, the telemetry exporter):
//
//	events := gpu.TeeEvents(backend, exporter.ObserveEvent)
//	deviceplugin.HealthLoop{Events: events, ...}
//
// Observers run on the watch goroutine and must not block.
func TeeEvents(src EventSource, observers ...func(Event)) EventSource {
	return teeSource{src: src, observers: observers}
}

type teeSource struct {
	src       EventSource
	observers []func(Event)
}

func (t teeSource) WatchEvents(ctx context.Context, handle func(Event)) error {
	return t.src.WatchEvents(ctx, func(ev Event) {
		for _, o := range t.observers {
			o(ev)
		}
		handle(ev)
	})
}
