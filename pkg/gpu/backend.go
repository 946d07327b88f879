package gpu

import "context"

// Discoverer takes a snapshot of the machine's devices and topology.
type Discoverer interface {
	Discover(ctx context.Context) (*Machine, error)
}

// MIGManager changes MIG modes and instances. Index is the physical GPU index.
type MIGManager interface {
	// MIGProfiles lists the GPU-instance profiles GPU index offers, with their legal placements.
	MIGProfiles(ctx context.Context, index int) ([]MIGProfileInfo, error)
	// SetMIGMode enables or disables MIG; it returns ErrResetRequired (wrapped)
	// when the change is pending a GPU reset.
	SetMIGMode(ctx context.Context, index int, enabled bool) error
	// CreateMIGDevice creates a GPU instance of profile at placement start, with
	// one compute instance spanning it, and returns the new MIG device.
	CreateMIGDevice(ctx context.Context, index int, profile string, start int) (MIGDevice, error)
	// DestroyMIGDevice destroys the compute instances of a GPU instance and the GPU instance.
	DestroyMIGDevice(ctx context.Context, index int, gpuInstanceID int) error
}

// Sampler reads telemetry for every device.
type Sampler interface {
	Sample(ctx context.Context) (*Snapshot, error)
}

// EventSource delivers device events until ctx ends.
type EventSource interface {
	// WatchEvents calls handle for every event until ctx is done, then returns
	// nil; it returns an error if events cannot be watched at all.
	WatchEvents(ctx context.Context, handle func(Event)) error
}

// Backend is everything a GPU backend provides. Consumers should declare the
// subset they need rather than depend on all of it.
type Backend interface {
	Discoverer
	MIGManager
	Sampler
	EventSource
	// Name identifies the backend: "nvml", "sim:dgx-h100", "none".
	Name() string
	Close() error
}
