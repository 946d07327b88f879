package inventory

import (
	"cmp"
	"os"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Label names and values of NVIDIA's GPU Feature Discovery that Tessera
// writes. Formats follow GFD (k8s-device-plugin internal/lm): product names
// with blanks as dashes and "-SHARED" appended for a time-sliced resource
// that is not renamed, memory in MiB, counts as decimal integers.
const (
	labelPrefix      = "nvidia.com/"
	gpuResource      = deviceplugin.ResourceGPU
	migResourcePfx   = "nvidia.com/mig-"
	sharingNone      = "none"
	sharingTimeSlice = "time-slicing"
	machineUnknown   = "unknown"
)

// BuildLabels returns the GFD-compatible node labels of a snapshot. A
// machine without GPUs gets none, as GFD writes none; then the publisher
// removes those it wrote before.
//
// Where GFD's choice depends on map order (a node with several GPU products
// labels nvidia.com/gpu.* after one of them), Tessera takes the product of
// the lowest-indexed GPU, preferring GPUs not in MIG mode as GFD does. GFD's
// nvidia.com/gfd.timestamp is not written: it would change the Node at every
// start for no reader; nvidia.com/gpu.mode (from the PCI class) and
// nvidia.com/vgpu.* are not written because the machine model does not carry
// them. A MIG profile with a '+' ("1g.10gb+me") is labelled under its
// resource name (nvidia.com/mig-1g.10gb.me.*): '+' is not allowed in label
// keys.
func BuildLabels(s Snapshot) map[string]string {
	m := s.Machine
	if m == nil || len(m.Devices) == 0 {
		return map[string]string{}
	}
	l := map[string]string{
		labelPrefix + "gpu.present": "true",
		labelPrefix + "gpu.machine": cmp.Or(strings.ReplaceAll(strings.TrimSpace(s.MachineType), " ", "-"), machineUnknown),
		labelPrefix + "mps.capable": "false",
	}
	versionLabels(l, m.Versions)
	migCapable := slices.ContainsFunc(m.Devices, func(d gpu.Device) bool { return d.MIGCapable })
	l[labelPrefix+"mig.capable"] = strconv.FormatBool(migCapable)

	adv := advertisedByUUID(s.Resources)
	strategy := cmp.Or(s.Options.MIGStrategy, deviceplugin.MIGStrategyNone)
	wholeGPULabels(l, m, adv)
	if strategy != deviceplugin.MIGStrategyNone {
		l[labelPrefix+"mig.strategy"] = strategy
		switch strategy {
		case deviceplugin.MIGStrategySingle:
			migSingleLabels(l, m, adv)
		case deviceplugin.MIGStrategyMixed:
			migMixedLabels(l, m, adv)
		}
	}
	for k, v := range l {
		if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			delete(l, k) // an odd machine type or device name must not fail the whole write
		}
	}
	return l
}

// versionLabels writes the driver and CUDA versions, both GFD's current
// names and its deprecated ones (still read by older manifests).
func versionLabels(l map[string]string, v gpu.Versions) {
	parts := strings.Split(v.Driver, ".")
	if len(parts) >= 2 && len(parts) <= 3 {
		rev := ""
		if len(parts) == 3 {
			rev = parts[2]
		}
		for _, p := range []struct{ key, value string }{
			{"cuda.driver.major", parts[0]}, {"cuda.driver.minor", parts[1]}, {"cuda.driver.rev", rev},
			{"cuda.driver-version.major", parts[0]}, {"cuda.driver-version.minor", parts[1]},
			{"cuda.driver-version.revision", rev}, {"cuda.driver-version.full", v.Driver},
		} {
			l[labelPrefix+p.key] = p.value
		}
	}
	if major, minor, ok := strings.Cut(v.CUDADriver, "."); ok {
		for _, p := range []struct{ key, value string }{
			{"cuda.runtime.major", major}, {"cuda.runtime.minor", minor},
			{"cuda.runtime-version.major", major}, {"cuda.runtime-version.minor", minor},
			{"cuda.runtime-version.full", v.CUDADriver},
		} {
			l[labelPrefix+p.key] = p.value
		}
	}
}

// resourceLabels writes <resource>.{product,count,replicas,sharing-strategy}.
// replicas 0 means sharing does not apply (a MIG-enabled GPU's whole-GPU
// labels); a shared resource that keeps its base name gets "-SHARED".
func resourceLabels(l map[string]string, resource, product string, count, replicas int, renamed bool) {
	strategy := sharingNone
	if replicas > 1 {
		strategy = sharingTimeSlice
		if !renamed {
			product += "-SHARED"
		}
	}
	l[resource+".product"] = product
	l[resource+".count"] = strconv.Itoa(count)
	l[resource+".replicas"] = strconv.Itoa(replicas)
	l[resource+".sharing-strategy"] = strategy
}

// wholeGPULabels writes nvidia.com/gpu.* for the node's GPUs.
func wholeGPULabels(l map[string]string, m *gpu.Machine, adv map[string]advertisedDevice) {
	counts := map[string]int{}
	for _, d := range m.Devices {
		counts[productName(d)]++
	}
	// GFD labels MIG-enabled GPUs first, then lets GPUs in use as whole
	// GPUs override them; take the lowest index of the winning kind.
	pick := slices.IndexFunc(m.Devices, func(d gpu.Device) bool { return !d.MIGEnabled })
	if pick < 0 {
		pick = 0
	}
	d := m.Devices[pick]
	name := productName(d)
	replicas, renamed := 0, false
	if !d.MIGEnabled {
		replicas = 1
		if a, ok := adv[d.UUID]; ok && a.shared {
			replicas, renamed = int(a.replicas), a.resource != gpuResource
		}
	}
	resourceLabels(l, gpuResource, name, counts[name], replicas, renamed)
	if d.MemoryMiB > 0 {
		l[gpuResource+".memory"] = strconv.FormatUint(d.MemoryMiB, 10)
	}
	if d.ComputeCapability.Major > 0 {
		l[gpuResource+".family"] = family(d.ComputeCapability)
		l[gpuResource+".compute.major"] = strconv.Itoa(d.ComputeCapability.Major)
		l[gpuResource+".compute.minor"] = strconv.Itoa(d.ComputeCapability.Minor)
	}
}

// family is GFD's architecture family for a compute capability.
func family(cc gpu.ComputeCapability) string {
	switch cc.Major {
	case 1:
		return "tesla"
	case 2:
		return "fermi"
	case 3:
		return "kepler"
	case 5:
		return "maxwell"
	case 6:
		return "pascal"
	case 7:
		if cc.Minor < 5 {
			return "volta"
		}
		return "turing"
	case 8:
		if cc.Minor < 9 {
			return "ampere"
		}
		return "ada-lovelace"
	case 9:
		return "hopper"
	case 10, 12:
		return "blackwell"
	case 13:
		return "rubin"
	}
	return "undefined"
}

// migGroup is the MIG devices of one profile, with the first of them (by
// GPU index, then placement) standing for all, as GFD's first occurrence.
type migGroup struct {
	profile string
	parent  gpu.Device
	first   gpu.MIGDevice
	count   int
}

func migGroups(m *gpu.Machine) []*migGroup {
	byProfile := map[string]*migGroup{}
	var out []*migGroup
	for _, d := range m.Devices {
		if !d.MIGEnabled {
			continue
		}
		migs := slices.Clone(d.MIGDevices)
		slices.SortFunc(migs, func(a, b gpu.MIGDevice) int { return a.Placement.Start - b.Placement.Start })
		for _, mg := range migs {
			g := byProfile[mg.Profile]
			if g == nil {
				g = &migGroup{profile: mg.Profile, parent: d, first: mg}
				byProfile[mg.Profile] = g
				out = append(out, g)
			}
			g.count++
		}
	}
	slices.SortFunc(out, func(a, b *migGroup) int { return cmp.Compare(a.profile, b.profile) })
	return out
}

// migLabels writes a MIG resource's labels from its group.
func migLabels(l map[string]string, resource string, g *migGroup, adv map[string]advertisedDevice) {
	replicas, renamed := 1, false
	if a, ok := adv[g.first.UUID]; ok && a.shared {
		replicas, renamed = int(a.replicas), a.resource != resource
	}
	resourceLabels(l, resource, productName(g.parent)+"-MIG-"+sanitise(g.profile), g.count, replicas, renamed)
	gi, ci := g.first.GPUSlices, g.first.ComputeSlices
	for _, a := range []struct {
		key   string
		value int
	}{
		{"memory", int(g.first.MemoryMiB)},
		{"multiprocessors", g.first.MultiprocessorCount},
		{"slices.gi", gi},
		{"slices.ci", ci},
		{"engines.copy", g.first.Engines.Copy},
		{"engines.decoder", g.first.Engines.Decoder},
		{"engines.encoder", g.first.Engines.Encoder},
		{"engines.jpeg", g.first.Engines.JPEG},
		{"engines.ofa", g.first.Engines.OFA},
	} {
		l[resource+"."+a.key] = strconv.Itoa(a.value)
	}
}

// migMixedLabels writes nvidia.com/mig-<profile>.* for every profile
// present. MIG-enabled GPUs without MIG devices are ignored, as GFD does.
func migMixedLabels(l map[string]string, m *gpu.Machine, adv map[string]advertisedDevice) {
	for _, g := range migGroups(m) {
		migLabels(l, migResourcePfx+strings.ReplaceAll(g.profile, "+", "."), g, adv)
	}
}

// migSingleLabels writes the MIG profile's labels over nvidia.com/gpu.*
// when every GPU is MIG-enabled with one profile; otherwise GFD's "invalid"
// labels (product <model>-MIG-INVALID, count/replicas/memory 0).
func migSingleLabels(l map[string]string, m *gpu.Machine, adv map[string]advertisedDevice) {
	var enabled, disabled, empty int
	first := -1
	for i, d := range m.Devices {
		if !d.MIGEnabled {
			disabled++
			continue
		}
		enabled++
		if first < 0 {
			first = i
		}
		if len(d.MIGDevices) == 0 {
			empty++
		}
	}
	if enabled == 0 {
		return // the same as strategy none
	}
	groups := migGroups(m)
	if empty > 0 || disabled > 0 || len(groups) != 1 {
		l[gpuResource+".product"] = productName(m.Devices[first]) + "-MIG-INVALID"
		l[gpuResource+".count"] = "0"
		l[gpuResource+".replicas"] = "0"
		l[gpuResource+".sharing-strategy"] = ""
		l[gpuResource+".memory"] = "0"
		return
	}
	migLabels(l, gpuResource, groups[0], adv)
}

// DefaultMachineTypeFile is where Linux exposes the server model, the file
// GFD reads for nvidia.com/gpu.machine.
const DefaultMachineTypeFile = "/sys/class/dmi/id/product_name"

// ReadMachineType reads the server model from a DMI product-name file
// (DefaultMachineTypeFile); it returns "" when the file cannot be read, and
// the label then says "unknown", as GFD's does.
func ReadMachineType(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
