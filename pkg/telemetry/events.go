package telemetry

import (
	"maps"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/xid"
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
func xidDescription(code uint64) string {
	if d := xid.Description(code); d != "" {
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
