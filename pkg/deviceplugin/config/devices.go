package config

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DeviceRef is a device a shared resource can be built on: a whole GPU, or a
// MIG device (UUID starting with "MIG-").
type DeviceRef struct {
	// Index is the physical GPU index; for a MIG device, its parent GPU's.
	Index int
	// MIGIndex is, for a MIG device, its position among its parent GPU's MIG
	// devices: the M of NVIDIA's "<gpu>:<mig>" notation. Unused for a GPU.
	MIGIndex int
	// UUID is "GPU-<uuid>" for a GPU, "MIG-<uuid>" for a MIG device.
	UUID string
	// ParentUUID is, for a MIG device, its GPU's UUID; it lets a GPU UUID in
	// a devices list select that GPU's MIG devices.
	ParentUUID string
}

// IsMIG reports whether the device is a MIG device.
func (d DeviceRef) IsMIG() bool { return strings.HasPrefix(d.UUID, "MIG-") }

func (d DeviceRef) String() string {
	if d.IsMIG() {
		return fmt.Sprintf("%d:%d %s", d.Index, d.MIGIndex, d.UUID)
	}
	return fmt.Sprintf("%d %s", d.Index, d.UUID)
}

// ResolveDevices returns the candidates r's devices filter selects, in
// candidate order, each once. candidates are the devices of r.Name on this
// node, ordered by Index then MIGIndex.
//
//   - all: every candidate (none when the node has none);
//   - a count N: the first N candidates; fewer than N is an error;
//   - a list: each entry selects candidates, and an entry that selects none
//     is an error naming the field and the entry:
//     a GPU index ("0") selects that GPU, or for a MIG resource every
//     candidate on that GPU; a MIG index ("0:1") the MIG device; a GPU UUID
//     that GPU or its MIG devices; a MIG UUID that MIG device.
//
// Errors are *field.Error values for the path
// sharing.timeSlicing.resources[<i>].devices.
func (c *Config) ResolveDevices(r ReplicatedResource, candidates []DeviceRef) ([]DeviceRef, error) {
	path := c.devicesPath(r)
	switch {
	case r.Devices.Count > 0:
		if r.Devices.Count > len(candidates) {
			return nil, field.Invalid(path, r.Devices.Count,
				fmt.Sprintf("selects the first %d devices, but this node has %d %s devices%s", r.Devices.Count, len(candidates), r.Name, listCandidates(candidates)))
		}
		return append([]DeviceRef(nil), candidates[:r.Devices.Count]...), nil
	case len(r.Devices.List) > 0:
		selected := make([]bool, len(candidates))
		var unmatched []string
		for _, ref := range r.Devices.List {
			matched := false
			for i, d := range candidates {
				if refMatches(ref, d) {
					selected[i] = true
					matched = true
				}
			}
			if !matched {
				unmatched = append(unmatched, ref)
			}
		}
		if len(unmatched) > 0 {
			return nil, field.Invalid(path, unmatched,
				fmt.Sprintf("selects no %s device on this node%s", r.Name, listCandidates(candidates)))
		}
		var out []DeviceRef
		for i, d := range candidates {
			if selected[i] {
				out = append(out, d)
			}
		}
		return out, nil
	default: // All, or a zero ReplicatedDevices
		return append([]DeviceRef(nil), candidates...), nil
	}
}

// devicesPath is the field path of r's devices in c, found by name.
func (c *Config) devicesPath(r ReplicatedResource) *field.Path {
	resources := field.NewPath("sharing", "timeSlicing", "resources")
	for i, x := range c.Sharing.TimeSlicing.Resources {
		if x.Name == r.Name {
			return resources.Index(i).Child("devices")
		}
	}
	return resources.Key(r.Name).Child("devices")
}

func listCandidates(candidates []DeviceRef) string {
	if len(candidates) == 0 {
		return " (it has none)"
	}
	s := make([]string, len(candidates))
	for i, d := range candidates {
		s[i] = d.String()
	}
	return " (devices: " + strings.Join(s, ", ") + ")"
}

// refMatches reports whether a canonical devices list entry selects d.
func refMatches(ref string, d DeviceRef) bool {
	switch {
	case isDigits(ref):
		i, err := strconv.Atoi(ref)
		return err == nil && d.Index == i
	case strings.Contains(ref, ":") && !strings.Contains(ref, "-"):
		gpu, mig, _ := strings.Cut(ref, ":")
		g, err1 := strconv.Atoi(gpu)
		m, err2 := strconv.Atoi(mig)
		return err1 == nil && err2 == nil && d.IsMIG() && d.Index == g && d.MIGIndex == m
	case strings.HasPrefix(ref, "GPU-"):
		if d.IsMIG() {
			return strings.EqualFold(ref, d.ParentUUID)
		}
		return strings.EqualFold(ref, d.UUID)
	case strings.HasPrefix(ref, "MIG-"):
		return d.IsMIG() && strings.EqualFold(ref, d.UUID)
	}
	return false
}
