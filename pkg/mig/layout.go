package mig

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Layout is the MIG state of one GPU: its MIG mode and its MIG instances.
type Layout struct {
	MIGEnabled bool `json:"migEnabled"`
	// MIGPendingReset is set on a discovered GPU whose MIG mode change to
	// !MIGEnabled waits for a GPU reset. It is never set in a desired layout.
	MIGPendingReset bool `json:"migPendingReset,omitempty"`
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

// String writes "1g.10gb@3".
func (i Instance) String() string { return fmt.Sprintf("%s@%d", i.Profile, i.Placement.Start) }

// sameSlot reports whether two instances are the same profile at the same place.
func (i Instance) sameSlot(o Instance) bool {
	return i.Profile == o.Profile && i.Placement == o.Placement
}

// LayoutOf returns the current layout of a discovered GPU.
func LayoutOf(d gpu.Device) Layout {
	l := Layout{MIGEnabled: d.MIGEnabled, MIGPendingReset: d.MIGCapable && d.MIGPendingEnabled != d.MIGEnabled}
	for _, m := range d.MIGDevices {
		l.Instances = append(l.Instances, Instance{
			Profile:       m.Profile,
			Placement:     m.Placement,
			GPUInstanceID: m.GPUInstanceID,
			UUID:          m.UUID,
		})
	}
	sortInstances(l.Instances)
	return l
}

func sortInstances(is []Instance) {
	slices.SortStableFunc(is, func(a, b Instance) int {
		if c := cmp.Compare(a.Placement.Start, b.Placement.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.GPUInstanceID, b.GPUInstanceID); c != 0 {
			return c
		}
		return strings.Compare(a.Profile, b.Profile)
	})
}

// Counts returns how many instances of each profile the layout holds.
func (l Layout) Counts() map[string]int {
	out := map[string]int{}
	for _, i := range l.Instances {
		out[i.Profile]++
	}
	return out
}

// Satisfies reports whether l has the mode and the profile counts of want,
// whatever the placements, with no mode change pending: a GPU whose layout
// satisfies the desired one is left untouched.
func (l Layout) Satisfies(want Layout) bool {
	return l.MIGEnabled == want.MIGEnabled && !l.MIGPendingReset && maps.Equal(l.Counts(), want.Counts())
}

// Matches reports whether l has the mode of want and exactly its instances
// (profile and placement; IDs and UUIDs aside). A pending mode change is
// ignored.
func (l Layout) Matches(want Layout) bool {
	if l.MIGEnabled != want.MIGEnabled || len(l.Instances) != len(want.Instances) {
		return false
	}
	a, b := slices.Clone(l.Instances), slices.Clone(want.Instances)
	key := func(x, y Instance) int {
		if c := cmp.Compare(x.Placement.Start, y.Placement.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Placement.Size, y.Placement.Size); c != 0 {
			return c
		}
		return strings.Compare(x.Profile, y.Profile)
	}
	slices.SortFunc(a, key)
	slices.SortFunc(b, key)
	for i := range a {
		if !a[i].sameSlot(b[i]) {
			return false
		}
	}
	return true
}

// String describes the layout: "mig disabled", "mig enabled, no instances" or
// "mig enabled: 3g.20gb@0 2g.10gb@4 1g.5gb@6".
func (l Layout) String() string {
	var s string
	switch {
	case !l.MIGEnabled:
		s = "mig disabled"
	case len(l.Instances) == 0:
		s = "mig enabled, no instances"
	default:
		parts := make([]string, len(l.Instances))
		for i, in := range l.Instances {
			parts[i] = in.String()
		}
		s = "mig enabled: " + strings.Join(parts, " ")
	}
	if l.MIGPendingReset {
		s += fmt.Sprintf(" (mig %s pending a gpu reset)", map[bool]string{true: "disable", false: "enable"}[l.MIGEnabled])
	}
	return s
}
