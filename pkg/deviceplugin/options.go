package deviceplugin

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// OptionsFromConfig resolves a device-plugin configuration file against a
// machine: each time-slicing entry becomes a ShareRule whose device filter
// (all, the first N, or a list of indexes and UUIDs) is evaluated on the
// devices the resource has on this node.
func OptionsFromConfig(c *config.Config, m *gpu.Machine, policy SharePolicy) (Options, error) {
	o := Options{
		MIGStrategy:                string(c.Flags.MIGStrategy),
		FailRequestsGreaterThanOne: c.Sharing.TimeSlicing.FailRequestsGreaterThanOne,
		SharePolicy:                policy,
		CDIAnnotationPrefix:        c.Flags.Plugin.CDIAnnotationPrefix,
		ByIndex:                    c.Flags.Plugin.DeviceIDStrategy == config.DeviceIDStrategyIndex,
	}
	for _, s := range c.Flags.Plugin.DeviceListStrategies {
		o.ListStrategies = append(o.ListStrategies, string(s))
	}
	bases, err := baseDevices(m, o)
	if err != nil {
		return Options{}, err
	}
	for i, r := range c.Sharing.TimeSlicing.Resources {
		field := fmt.Sprintf("sharing.timeSlicing.resources[%d]", i)
		var devs []Device
		for _, b := range bases {
			if b.resource == r.Name {
				devs = append(devs, b.dev)
			}
		}
		match, err := deviceFilter(field, r.Devices, devs)
		if err != nil {
			return Options{}, err
		}
		o.Sharing = append(o.Sharing, ShareRule{Field: field, Resource: r.Name, Rename: r.Rename, Replicas: r.Replicas, Matches: match})
	}
	return o, nil
}

// deviceFilter turns a devices selector into a predicate over (GPU index, UUID).
func deviceFilter(field string, sel config.ReplicatedDevices, devs []Device) (func(int, string) bool, error) {
	switch {
	case sel.All:
		return nil, nil
	case sel.Count > 0:
		if sel.Count > len(devs) {
			return nil, fmt.Errorf("%s.devices: asks for the first %d devices but this node has %d", field, sel.Count, len(devs))
		}
		chosen := map[string]bool{}
		for _, d := range devs[:sel.Count] {
			chosen[d.UUID] = true
		}
		return func(_ int, uuid string) bool { return chosen[uuid] }, nil
	}
	chosen := map[string]bool{}
	for _, ref := range sel.List {
		n := 0
		for _, d := range devs {
			if ref == d.Ref || ref == d.UUID || ref == d.GPUUUID || (d.MIG != nil && ref == strconv.Itoa(d.GPU)) {
				chosen[d.UUID] = true
				n++
			}
		}
		if n == 0 {
			refs := make([]string, 0, len(devs))
			for _, d := range devs {
				refs = append(refs, d.Ref)
			}
			return nil, fmt.Errorf("%s.devices: %q matches no device of this resource on this node (it has %v)", field, ref, slices.Compact(refs))
		}
	}
	return func(_ int, uuid string) bool { return chosen[uuid] }, nil
}
