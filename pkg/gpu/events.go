package gpu

import (
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
