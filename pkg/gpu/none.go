package gpu

import (
	"context"
	"fmt"
)

// None is the backend of a machine without usable GPUs. The agent keeps
// running on it, advertises nothing and reports Reason.
type None struct {
	// Reason says why there are no GPUs, e.g. the NVML load error.
	Reason string
}

var _ Backend = (*None)(nil)

// NewNone returns a backend with no devices.
func NewNone(reason string) *None { return &None{Reason: reason} }

// Name is "none".
func (n *None) Name() string { return "none" }

// Discover returns an empty machine carrying the reason.
func (n *None) Discover(context.Context) (*Machine, error) {
	return &Machine{Backend: n.Name(), Reason: n.Reason, Topology: NewTopology(0)}, nil
}

// MIGProfiles fails: there is no GPU index on this machine.
func (n *None) MIGProfiles(_ context.Context, index int) ([]MIGProfileInfo, error) {
	return nil, n.noDevice(index)
}

// SetMIGMode fails: there is no GPU index on this machine.
func (n *None) SetMIGMode(_ context.Context, index int, _ bool) error { return n.noDevice(index) }

// CreateMIGDevice fails: there is no GPU index on this machine.
func (n *None) CreateMIGDevice(_ context.Context, index int, _ string, _ int) (MIGDevice, error) {
	return MIGDevice{}, n.noDevice(index)
}

// DestroyMIGDevice fails: there is no GPU index on this machine.
func (n *None) DestroyMIGDevice(_ context.Context, index int, _ int) error { return n.noDevice(index) }

// Sample returns an empty snapshot.
func (n *None) Sample(context.Context) (*Snapshot, error) { return &Snapshot{}, nil }

// WatchEvents blocks until ctx is done: a machine without GPUs has no events.
func (n *None) WatchEvents(ctx context.Context, _ func(Event)) error {
	<-ctx.Done()
	return nil
}

// Close does nothing.
func (n *None) Close() error { return nil }

func (n *None) noDevice(index int) error {
	return fmt.Errorf("gpu %d: %w (%s)", index, ErrNoDevices, n.Reason)
}
