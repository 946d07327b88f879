package mig

import (
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Layout is the MIG state of one GPU: its MIG mode and its MIG instances.
type Layout struct {
	MIGEnabled bool `json:"migEnabled"`
	// Instances are ordered by placement start.
	Instances []Instance `json:"instances,omitempty"`
}

// Instance is one MIG device: a GPU instance of a profile at a placement with
// one compute instance spanning it.
type Instance struct {
	Profile   string        `json:"profile"`
	Placement gpu.Placement `json:"placement"`
	// GPUInstanceID and UUID identify an existing MIG device; they are zero
	// in a desired layout.
	GPUInstanceID int    `json:"gpuInstanceID,omitempty"`
	UUID          string `json:"uuid,omitempty"`
}

// LayoutOf returns the current layout of a discovered GPU.
func LayoutOf(d gpu.Device) Layout {
	return Layout{}
}

// Counts returns how many instances of each profile the layout holds.
func (l Layout) Counts() map[string]int {
	return nil
}

// Satisfies reports whether l has the mode and the profile counts of want,
// whatever the placements: a GPU whose layout satisfies the desired one is
// left untouched.
func (l Layout) Satisfies(want Layout) bool {
	return false
}

// String describes the layout: "mig disabled", "mig enabled, no instances" or
// "mig enabled: 3g.20gb@0 2g.10gb@4 1g.5gb@6".
func (l Layout) String() string {
	return ""
}
