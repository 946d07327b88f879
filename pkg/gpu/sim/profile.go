package sim

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Profile describes a simulated machine. It is what a machine description
// (YAML) decodes into; see the package documentation for the format.
type Profile struct {
	// Name names the machine and seeds its GPU UUIDs.
	Name string `yaml:"name"`
	// DriverVersion is the driver version NVML reports ("550.54.15"). Empty
	// means the newest default of the machine's GPU models.
	DriverVersion string `yaml:"driverVersion,omitempty"`
	// CUDADriverVersion is the CUDA version the driver supports ("12.4").
	CUDADriverVersion string `yaml:"cudaDriverVersion,omitempty"`
	// GPUs lists groups of identical GPUs; GPUs are indexed in this order.
	GPUs []GPUGroup `yaml:"gpus"`
	// PCIBusIDs optionally fixes each GPU's PCI address ("0000:18:00.0").
	PCIBusIDs []string `yaml:"pciBusIds,omitempty"`
	Topology  Topology `yaml:"topology,omitempty"`
}

// GPUGroup is Count GPUs of one catalogue model.
type GPUGroup struct {
	Model string `yaml:"model"`
	Count int    `yaml:"count"`
}

// Topology describes how the GPUs are connected. GPU indices refer to the
// order of Profile.GPUs.
type Topology struct {
	// NVSwitch connects every GPU to an NVSwitch fabric with all its NVLinks.
	NVSwitch bool `yaml:"nvswitch,omitempty"`
	// NVLinkBridges are pairs of GPUs joined by NVLink bridges.
	NVLinkBridges [][]int `yaml:"nvlinkBridges,omitempty"`
	// PCIeSwitches are groups of GPUs under one PCIe switch.
	PCIeSwitches [][]int `yaml:"pcieSwitches,omitempty"`
	// PCIeUpstream are groups of GPUs whose switches share an upstream switch.
	PCIeUpstream [][]int `yaml:"pcieUpstream,omitempty"`
	// HostBridges are groups of GPUs behind one CPU host bridge.
	HostBridges [][]int `yaml:"hostBridges,omitempty"`
	// NUMA is the NUMA node of each GPU; empty means all on node 0.
	NUMA []int `yaml:"numa,omitempty"`
}

var (
	//go:embed machines/*.yaml
	builtinFS embed.FS

	driverVersionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+){1,2}$`)
	cudaVersionRE   = regexp.MustCompile(`^([0-9]+)\.([0-9])$`)
	pciBusIDRE      = regexp.MustCompile(`^([0-9a-fA-F]{4}|[0-9a-fA-F]{8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$`)
)

const knownFields = "name, driverVersion, cudaDriverVersion, gpus[].model, gpus[].count, pciBusIds, " +
	"topology.nvswitch, topology.nvlinkBridges, topology.pcieSwitches, topology.pcieUpstream, topology.hostBridges, topology.numa"

// BuiltinNames returns the names of the built-in machines, sorted.
func BuiltinNames() []string {
	entries, err := builtinFS.ReadDir("machines")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), path.Ext(e.Name())))
	}
	slices.Sort(names)
	return names
}

// builtinProfile returns the built-in machine called name.
func builtinProfile(name string) (Profile, error) {
	data, err := builtinFS.ReadFile("machines/" + name + ".yaml")
	if err != nil || strings.ContainsAny(name, "/\\") {
		return Profile{}, fmt.Errorf("unknown built-in machine %q (built-in machines: %s; or give a path to a .yaml machine description)",
			name, strings.Join(BuiltinNames(), ", "))
	}
	p, err := ParseProfile(data)
	if err != nil {
		return Profile{}, fmt.Errorf("built-in machine %s: %w", name, err)
	}
	return p, nil
}

// ParseProfile decodes a YAML machine description, rejecting unknown fields,
// applies defaults and validates it.
func ParseProfile(data []byte) (Profile, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Profile{}, errors.New("parsing machine description: empty document")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		if strings.Contains(err.Error(), "not found in type") {
			return Profile{}, fmt.Errorf("parsing machine description: %w (known fields: %s)", err, knownFields)
		}
		return Profile{}, fmt.Errorf("parsing machine description: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Profile{}, errors.New("parsing machine description: more than one YAML document; describe one machine per file")
	}
	if err := p.complete(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// complete applies defaults and validates.
func (p *Profile) complete() error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.DriverVersion == "" || p.CUDADriverVersion == "" {
		driver, cuda := p.defaultVersions()
		if p.DriverVersion == "" {
			p.DriverVersion = driver
		}
		if p.CUDADriverVersion == "" {
			p.CUDADriverVersion = cuda
		}
	}
	return nil
}

// defaultVersions returns the newest default driver and CUDA version of the
// profile's models.
func (p *Profile) defaultVersions() (driver, cuda string) {
	driver, cuda = "550.54.15", "12.4"
	for _, g := range p.GPUs {
		m := catalogue[g.Model]
		if versionLess(driver, m.defaultDriver) {
			driver = m.defaultDriver
		}
		if versionLess(cuda, m.defaultCUDA) {
			cuda = m.defaultCUDA
		}
	}
	return driver, cuda
}

func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// NumGPUs returns the number of GPUs the profile describes.
func (p *Profile) NumGPUs() int {
	n := 0
	for _, g := range p.GPUs {
		if g.Count > 0 {
			n += g.Count
		}
	}
	return n
}

// models returns the catalogue model of every GPU, by index. It assumes a
// validated profile.
func (p *Profile) models() []*model {
	var out []*model
	for _, g := range p.GPUs {
		for range g.Count {
			out = append(out, catalogue[g.Model])
		}
	}
	return out
}

// Validate checks the profile and reports every problem, each naming the field
// and what is allowed.
func (p *Profile) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if p.Name == "" {
		add("name: required (it names the machine and seeds the GPU UUIDs)")
	}
	if p.DriverVersion != "" && !driverVersionRE.MatchString(p.DriverVersion) {
		add("driverVersion: %q is not a driver version like \"550.54.15\"", p.DriverVersion)
	}
	if p.CUDADriverVersion != "" && !cudaVersionRE.MatchString(p.CUDADriverVersion) {
		add("cudaDriverVersion: %q is not a CUDA version like \"12.4\"", p.CUDADriverVersion)
	}
	if len(p.GPUs) == 0 {
		add("gpus: at least one GPU group is required")
	}
	var ms []*model // per GPU index; nil for an unknown model
	for i, g := range p.GPUs {
		m, ok := catalogue[g.Model]
		if !ok {
			add("gpus[%d].model: unknown model %q (known models: %s)", i, g.Model, strings.Join(modelKeys(), ", "))
		}
		if g.Count < 1 {
			add("gpus[%d].count: must be at least 1, got %d", i, g.Count)
		}
		for range max(g.Count, 0) {
			ms = append(ms, m)
		}
	}
	n := len(ms)

	if len(p.PCIBusIDs) > 0 {
		if len(p.PCIBusIDs) != n {
			add("pciBusIds: has %d entries, want one per GPU (%d)", len(p.PCIBusIDs), n)
		}
		seen := map[string]int{}
		for i, id := range p.PCIBusIDs {
			canon, ok := canonicalBusID(id)
			if !ok {
				add("pciBusIds[%d]: %q is not a PCI address like \"0000:18:00.0\"", i, id)
				continue
			}
			if j, dup := seen[canon]; dup {
				add("pciBusIds[%d]: %q repeats pciBusIds[%d]", i, id, j)
			}
			seen[canon] = i
		}
	}

	t := p.Topology
	groups := func(field string, gs [][]int, minSize int) map[int]int {
		owner := map[int]int{}
		for gi, g := range gs {
			if len(g) < minSize {
				add("topology.%s[%d]: has %d GPUs, want at least %d", field, gi, len(g), minSize)
			}
			for _, idx := range g {
				if idx < 0 || idx >= n {
					add("topology.%s[%d]: GPU index %d out of range 0..%d", field, gi, idx, n-1)
					continue
				}
				if prev, dup := owner[idx]; dup {
					if prev == gi {
						add("topology.%s[%d]: GPU %d listed twice", field, gi, idx)
					} else {
						add("topology.%s[%d]: GPU %d is already in %s[%d]; a GPU belongs to at most one group", field, gi, idx, field, prev)
					}
					continue
				}
				owner[idx] = gi
			}
		}
		return owner
	}
	groups("pcieSwitches", t.PCIeSwitches, 1)
	upstream := groups("pcieUpstream", t.PCIeUpstream, 1)
	bridges := groups("hostBridges", t.HostBridges, 1)
	groups("nvlinkBridges", t.NVLinkBridges, 0)

	// A PCIe switch sits under one upstream switch and one host bridge.
	for _, outer := range []struct {
		field string
		owner map[int]int
	}{{"pcieUpstream", upstream}, {"hostBridges", bridges}} {
		for si, g := range t.PCIeSwitches {
			for _, a := range g {
				for _, b := range g {
					oa, okA := outer.owner[a]
					ob, okB := outer.owner[b]
					if a < b && (okA != okB || oa != ob) && inRange(a, n) && inRange(b, n) {
						add("topology.%s: GPUs %d and %d share pcieSwitches[%d] but not a %s group", outer.field, a, b, si, outer.field)
					}
				}
			}
		}
	}

	if len(t.NUMA) > 0 {
		if len(t.NUMA) != n {
			add("topology.numa: has %d entries, want one NUMA node per GPU (%d)", len(t.NUMA), n)
		}
		for i, node := range t.NUMA {
			if node < 0 {
				add("topology.numa[%d]: NUMA node %d is negative", i, node)
			}
		}
		if len(t.NUMA) == n {
			for gi, g := range t.HostBridges {
				for _, idx := range g {
					if inRange(idx, n) && inRange(g[0], n) && t.NUMA[idx] != t.NUMA[g[0]] {
						add("topology.hostBridges[%d]: GPUs %d and %d are on different NUMA nodes (%d, %d)", gi, g[0], idx, t.NUMA[g[0]], t.NUMA[idx])
					}
				}
			}
		}
	}

	if t.NVSwitch && len(t.NVLinkBridges) > 0 {
		add("topology: nvswitch and nvlinkBridges are mutually exclusive (an NVSwitch system has no bridges)")
	}
	if t.NVSwitch {
		for i, m := range ms {
			if m != nil && m.nvlinks == 0 {
				add("topology.nvswitch: GPU %d (%s) has no NVLink; NVLink models: %s", i, m.key, strings.Join(nvlinkModels(), ", "))
			}
		}
	}
	for bi, b := range t.NVLinkBridges {
		if len(b) != 2 {
			add("topology.nvlinkBridges[%d]: a bridge joins exactly 2 GPUs, got %d", bi, len(b))
			continue
		}
		for _, idx := range b {
			if inRange(idx, n) && ms[idx] != nil && ms[idx].nvlinks == 0 {
				add("topology.nvlinkBridges[%d]: GPU %d (%s) has no NVLink; NVLink models: %s", bi, idx, ms[idx].key, strings.Join(nvlinkModels(), ", "))
			}
		}
		if inRange(b[0], n) && inRange(b[1], n) && ms[b[0]] != nil && ms[b[1]] != nil && ms[b[0]] != ms[b[1]] {
			add("topology.nvlinkBridges[%d]: GPUs %d (%s) and %d (%s) are different models; bridges join identical GPUs", bi, b[0], ms[b[0]].key, b[1], ms[b[1]].key)
		}
	}
	return errors.Join(errs...)
}

func inRange(i, n int) bool { return i >= 0 && i < n }

func nvlinkModels() []string {
	var out []string
	for _, k := range modelKeys() {
		if catalogue[k].nvlinks > 0 {
			out = append(out, k)
		}
	}
	return out
}

// canonicalBusID returns a PCI address in NVML's form "00000000:18:00.0".
func canonicalBusID(s string) (string, bool) {
	m := pciBusIDRE.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	dom, _ := strconv.ParseUint(m[1], 16, 32)
	bus, _ := strconv.ParseUint(m[2], 16, 8)
	dev, _ := strconv.ParseUint(m[3], 16, 8)
	fn, _ := strconv.ParseUint(m[4], 16, 8)
	return fmt.Sprintf("%08X:%02X:%02X.%X", dom, bus, dev, fn), true
}
