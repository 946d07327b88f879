package deviceplugin

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Resource names and strategies compatible with NVIDIA's device plugin.
const (
	ResourceGPU       = "nvidia.com/gpu"
	migResourcePrefix = "nvidia.com/mig-"

	MIGStrategyNone   = "none"
	MIGStrategySingle = "single"
	MIGStrategyMixed  = "mixed"

	// replicaSep separates a GPU's UUID from the replica number in the device
	// IDs of time-sliced resources, as NVIDIA's plugin does.
	replicaSep = "::"
)

// SharePolicy chooses the GPU that serves a fractional request.
type SharePolicy string

// Share policies.
const (
	// SharePacked fills the GPU with the fewest free units that still fits,
	// keeping other GPUs whole (the default).
	SharePacked SharePolicy = "packed"
	// ShareDistributed spreads requests to the GPU with the most free units.
	ShareDistributed SharePolicy = "distributed"
)

// Options is the resolved configuration resources are built from.
type Options struct {
	MIGStrategy string
	// Sharing lists time-slicing rules; each covers some devices of one base
	// resource (nvidia.com/gpu or nvidia.com/mig-<profile>).
	Sharing []ShareRule
	// FailRequestsGreaterThanOne refuses requests for more than one unit of a
	// shared resource, as NVIDIA's plugin does.
	FailRequestsGreaterThanOne bool
	SharePolicy                SharePolicy
	// ListStrategies say how Allocate passes devices to the container runtime
	// (NVIDIA's deviceListStrategy): ListEnvVar (default), ListCDICRI,
	// ListCDIAnnotations, ListVolumeMounts; several may be combined.
	ListStrategies []string
	// CDIAnnotationPrefix prefixes the annotation of ListCDIAnnotations.
	CDIAnnotationPrefix string
	// ByIndex names devices to the container runtime by index ("0", "0:1" for
	// MIG device 1 of GPU 0) instead of UUID (NVIDIA's deviceIDStrategy=index).
	ByIndex bool
}

// Device list strategies.
const (
	ListEnvVar         = "envvar"
	ListCDICRI         = "cdi-cri"
	ListCDIAnnotations = "cdi-annotations"
	ListVolumeMounts   = "volume-mounts"
)

// ShareRule time-slices the devices of one base resource.
type ShareRule struct {
	// Field is the config path of the rule, for error messages
	// ("sharing.timeSlicing.resources[0]").
	Field string
	// Resource is the base resource: nvidia.com/gpu or nvidia.com/mig-<profile>.
	Resource string
	// Rename is the advertised name; empty keeps Resource.
	Rename string
	// Matches reports whether a device of the base resource is covered; nil
	// covers all of them.
	Matches func(index int, uuid string) bool
	// Replicas is the number of units each covered device is split into.
	Replicas int
}

// Device is one device ID advertised to the kubelet.
type Device struct {
	// ID is what the kubelet sees and passes back in Allocate.
	ID string
	// GPU is the physical GPU index and GPUUUID its UUID.
	GPU     int
	GPUUUID string
	// UUID is handed to the container: the GPU's or the MIG device's.
	UUID string
	// Ref is the device's index form: "0" for GPU 0, "0:1" for its MIG device 1.
	Ref string
	// MIG is set for MIG devices.
	MIG *gpu.MIGDevice
	// Replica is the unit number on a shared device; -1 when not shared.
	Replica int
	// NUMA is the GPU's NUMA node; -1 when unknown.
	NUMA int
}

// Resource is one extended resource and the device IDs behind it.
type Resource struct {
	Name    string
	Devices []Device
	// Shared is true for time-sliced resources: a request for n units is
	// served by n units of one physical device.
	Shared bool
}

// base is a device before sharing: a whole GPU or a MIG device.
type base struct {
	resource string
	dev      Device
}

// Build turns a machine into the resources to advertise. It refuses what it
// could not hand out: a single-strategy node whose GPUs differ, a sharing rule
// that matches nothing, a resource name mixing shared and whole devices.
func Build(m *gpu.Machine, o Options) ([]Resource, error) {
	bases, err := baseDevices(m, o)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Resource{}
	get := func(name string, shared bool) (*Resource, error) {
		r := byName[name]
		if r == nil {
			r = &Resource{Name: name, Shared: shared}
			byName[name] = r
		}
		if r.Shared != shared {
			return nil, fmt.Errorf("resource %s would mix time-sliced and whole devices; give the sharing rule a rename (for example %s.shared) or cover every device", name, name)
		}
		return r, nil
	}
	matched := make([]int, len(o.Sharing))
	for _, b := range bases {
		rule := -1
		for i, s := range o.Sharing {
			if s.Resource == b.resource && (s.Matches == nil || s.Matches(b.dev.GPU, b.dev.UUID)) {
				if rule >= 0 {
					return nil, fmt.Errorf("%s and %s both cover device %s of %s", o.Sharing[rule].Field, s.Field, b.dev.UUID, b.resource)
				}
				rule = i
			}
		}
		if rule < 0 {
			r, err := get(b.resource, false)
			if err != nil {
				return nil, err
			}
			r.Devices = append(r.Devices, b.dev)
			continue
		}
		s := o.Sharing[rule]
		matched[rule]++
		if s.Replicas < 1 {
			return nil, fmt.Errorf("%s.replicas: must be >= 1, got %d", s.Field, s.Replicas)
		}
		name := s.Resource
		if s.Rename != "" {
			name = s.Rename
		}
		r, err := get(name, true)
		if err != nil {
			return nil, err
		}
		for k := range s.Replicas {
			d := b.dev
			d.Replica = k
			d.ID = b.dev.UUID + replicaSep + strconv.Itoa(k)
			r.Devices = append(r.Devices, d)
		}
	}
	for i, s := range o.Sharing {
		if matched[i] == 0 {
			return nil, fmt.Errorf("%s.devices: matches no %s device on this node", s.Field, s.Resource)
		}
	}
	out := make([]Resource, 0, len(byName))
	for _, r := range byName {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// baseDevices lists whole GPUs and MIG devices under their base resource
// names according to the MIG strategy.
func baseDevices(m *gpu.Machine, o Options) ([]base, error) {
	whole := func(d gpu.Device) base {
		return base{resource: ResourceGPU, dev: Device{ID: d.UUID, GPU: d.Index, GPUUUID: d.UUID, UUID: d.UUID,
			Ref: strconv.Itoa(d.Index), Replica: -1, NUMA: d.NUMANode}}
	}
	mig := func(d gpu.Device, g gpu.MIGDevice, resource string) base {
		g2 := g
		pos := slices.IndexFunc(d.MIGDevices, func(x gpu.MIGDevice) bool { return x.UUID == g.UUID })
		return base{resource: resource, dev: Device{ID: g.UUID, GPU: d.Index, GPUUUID: d.UUID, UUID: g.UUID,
			Ref: fmt.Sprintf("%d:%d", d.Index, pos), MIG: &g2, Replica: -1, NUMA: d.NUMANode}}
	}
	var out []base
	switch o.MIGStrategy {
	case MIGStrategyNone, "":
		for _, d := range m.Devices {
			if d.MIGEnabled {
				// A MIG-enabled GPU cannot run CUDA work as a whole GPU.
				continue
			}
			out = append(out, whole(d))
		}
	case MIGStrategySingle:
		if err := checkSingle(m); err != nil {
			return nil, err
		}
		for _, d := range m.Devices {
			if !d.MIGEnabled {
				out = append(out, whole(d))
				continue
			}
			for _, g := range d.MIGDevices {
				out = append(out, mig(d, g, ResourceGPU))
			}
		}
	case MIGStrategyMixed:
		for _, d := range m.Devices {
			if !d.MIGEnabled {
				out = append(out, whole(d))
				continue
			}
			for _, g := range d.MIGDevices {
				out = append(out, mig(d, g, MIGResourceName(g.Profile)))
			}
		}
	default:
		return nil, fmt.Errorf("flags.migStrategy: unknown value %q (want none, single or mixed)", o.MIGStrategy)
	}
	return out, nil
}

// checkSingle enforces the single strategy's rule: every GPU is MIG-enabled
// with one and the same profile, or none is MIG-enabled.
func checkSingle(m *gpu.Machine) error {
	var migOn, migOff []string
	profiles := map[string][]string{}
	for _, d := range m.Devices {
		name := fmt.Sprintf("gpu %d (%s)", d.Index, d.UUID)
		if !d.MIGEnabled {
			migOff = append(migOff, name)
			continue
		}
		migOn = append(migOn, name)
		for _, g := range d.MIGDevices {
			if !slices.Contains(profiles[g.Profile], name) {
				profiles[g.Profile] = append(profiles[g.Profile], name)
			}
		}
	}
	if len(migOn) > 0 && len(migOff) > 0 {
		return fmt.Errorf("mig strategy single needs every gpu in the same MIG mode: MIG is enabled on %s but disabled on %s",
			strings.Join(migOn, ", "), strings.Join(migOff, ", "))
	}
	if len(profiles) > 1 {
		parts := make([]string, 0, len(profiles))
		for _, p := range slices.Sorted(maps.Keys(profiles)) {
			parts = append(parts, fmt.Sprintf("%s on %s", p, strings.Join(profiles[p], ", ")))
		}
		return fmt.Errorf("mig strategy single needs one MIG profile on every gpu, found %s (use the mixed strategy for mixed layouts)", strings.Join(parts, "; "))
	}
	return nil
}

// MIGResourceName is the mixed-strategy resource for a MIG profile, as NVIDIA's
// plugin names it: "1g.10gb" -> nvidia.com/mig-1g.10gb, "1g.10gb+me" ->
// nvidia.com/mig-1g.10gb.me ('+' is not allowed in resource names).
func MIGResourceName(profile string) string {
	return migResourcePrefix + strings.ReplaceAll(profile, "+", ".")
}
