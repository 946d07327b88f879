package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Allowed values, in the order error messages list them.
var (
	migStrategies        = []MIGStrategy{MIGStrategyNone, MIGStrategySingle, MIGStrategyMixed}
	deviceListStrategies = []DeviceListStrategy{DeviceListStrategyEnvVar, DeviceListStrategyVolumeMounts, DeviceListStrategyCDIAnnotations, DeviceListStrategyCDICRI}
	deviceIDStrategies   = []DeviceIDStrategy{DeviceIDStrategyUUID, DeviceIDStrategyIndex}
)

// Fields of NVIDIA's format that Tessera accepts and does not act on: driver
// and container-toolkit paths (Tessera's Allocate does not mount driver files),
// GPU Feature Discovery (Tessera's inventory writes those labels), IMEX, and
// NVIDIA's resource-renaming patterns (which NVIDIA's own plugin ignores too).
var (
	ignoredTop    = []string{"resources", "imex"}
	ignoredFlags  = []string{"nvidiaDriverRoot", "nvidiaDevRoot", "mpsRoot", "gdsEnabled", "gdrcopyEnabled", "mofedEnabled", "useNodeFeatureAPI", "deviceDiscoveryStrategy", "restartOnDeviceUnhealthy", "gfd"}
	ignoredPlugin = []string{"nvidiaCTKPath", "nvidiaCDIHookPath", "containerDriverRoot", "driverRootCtrPath"}
)

// Parse reads a configuration file (YAML or JSON) and returns it with defaults
// applied. An empty file is the default configuration. A file that is not
// valid returns an error listing every problem by field path
// ("sharing.timeSlicing.resources[1].replicas: Invalid value: 0: must be >= 1");
// errors.As finds the utilerrors.Aggregate of field errors in it.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Default(), nil
		}
		return nil, fmt.Errorf("reading config yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("reading config yaml: %w", err)
		}
		return nil, fmt.Errorf("reading config yaml: the file holds more than one yaml document")
	}
	p := &parser{c: &Config{set: map[string]bool{}}}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p.config(root)
	p.c.applyDefaults()
	p.validate()
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("invalid device plugin config: %w", p.errs.ToAggregate())
	}
	return p.c, nil
}

type parser struct {
	c    *Config
	errs field.ErrorList
	// dlsIsList is whether flags.plugin.deviceListStrategy was written as a list.
	dlsIsList bool
}

func (p *parser) config(n *yaml.Node) {
	c := p.c
	p.fields(n, nil, []string{"version", "flags", "sharing"}, ignoredTop, func(key string, v *yaml.Node, path *field.Path) {
		switch key {
		case "version":
			if s, ok := p.str(v, path); ok {
				c.Version = s
			}
		case "flags":
			p.flags(v, path)
		case "sharing":
			p.sharing(v, path)
		}
	})
}

func (p *parser) flags(n *yaml.Node, path *field.Path) {
	f := &p.c.Flags
	p.fields(n, path, []string{"migStrategy", "failOnInitError", "plugin"}, ignoredFlags, func(key string, v *yaml.Node, path *field.Path) {
		switch key {
		case "migStrategy":
			if s, ok := p.str(v, path); ok {
				f.MIGStrategy = MIGStrategy(s)
				p.markSet(path)
			}
		case "failOnInitError":
			if b, ok := p.boolean(v, path); ok {
				f.FailOnInitError = b
				p.markSet(path)
			}
		case "plugin":
			p.plugin(v, path)
		}
	})
}

func (p *parser) plugin(n *yaml.Node, path *field.Path) {
	f := &p.c.Flags.Plugin
	known := []string{"passDeviceSpecs", "deviceListStrategy", "deviceIDStrategy", "cdiAnnotationPrefix"}
	p.fields(n, path, known, ignoredPlugin, func(key string, v *yaml.Node, path *field.Path) {
		switch key {
		case "passDeviceSpecs":
			if b, ok := p.boolean(v, path); ok {
				f.PassDeviceSpecs = b
				p.markSet(path)
			}
		case "deviceListStrategy":
			// One string or a list of strings.
			if v.Kind == yaml.SequenceNode {
				list := []DeviceListStrategy{}
				for i, item := range v.Content {
					if s, ok := p.str(item, path.Index(i)); ok {
						list = append(list, DeviceListStrategy(s))
					}
				}
				f.DeviceListStrategies = list
				p.dlsIsList = true
				p.markSet(path)
			} else if s, ok := p.str(v, path); ok {
				f.DeviceListStrategies = []DeviceListStrategy{DeviceListStrategy(s)}
				p.markSet(path)
			}
		case "deviceIDStrategy":
			if s, ok := p.str(v, path); ok {
				f.DeviceIDStrategy = DeviceIDStrategy(s)
				p.markSet(path)
			}
		case "cdiAnnotationPrefix":
			if s, ok := p.str(v, path); ok {
				f.CDIAnnotationPrefix = s
				p.markSet(path)
			}
		}
	})
}

func (p *parser) sharing(n *yaml.Node, path *field.Path) {
	p.fields(n, path, []string{"timeSlicing", "mps"}, nil, func(key string, v *yaml.Node, path *field.Path) {
		switch key {
		case "timeSlicing":
			p.timeSlicing(v, path)
		case "mps":
			if isNull(v) {
				return
			}
			p.errs = append(p.errs, field.Forbidden(path, "MPS sharing is not supported by Tessera; use sharing.timeSlicing"))
		}
	})
}

func (p *parser) timeSlicing(n *yaml.Node, path *field.Path) {
	ts := &p.c.Sharing.TimeSlicing
	p.fields(n, path, []string{"renameByDefault", "failRequestsGreaterThanOne", "resources"}, nil, func(key string, v *yaml.Node, path *field.Path) {
		switch key {
		case "renameByDefault":
			if b, ok := p.boolean(v, path); ok {
				ts.RenameByDefault = b
			}
		case "failRequestsGreaterThanOne":
			if b, ok := p.boolean(v, path); ok {
				ts.FailRequestsGreaterThanOne = b
			}
		case "resources":
			if isNull(v) {
				return
			}
			if v.Kind != yaml.SequenceNode {
				p.errs = append(p.errs, field.TypeInvalid(path, describe(v), "must be a list"))
				return
			}
			for i, item := range v.Content {
				ts.Resources = append(ts.Resources, p.resource(item, path.Index(i)))
			}
		}
	})
}

func (p *parser) resource(n *yaml.Node, path *field.Path) ReplicatedResource {
	var r ReplicatedResource
	n = deref(n)
	if isNull(n) {
		p.errs = append(p.errs, field.TypeInvalid(path, "null", "must be a mapping with name and replicas"))
		return r
	}
	seen := map[string]bool{}
	p.fields(n, path, []string{"name", "rename", "devices", "replicas"}, nil, func(key string, v *yaml.Node, path *field.Path) {
		seen[key] = true
		switch key {
		case "name":
			if s, ok := p.str(v, path); ok {
				r.Name = canonicalResourceName(s)
			}
		case "rename":
			if s, ok := p.str(v, path); ok {
				r.Rename = canonicalResourceName(s)
			}
		case "devices":
			r.Devices = p.devices(v, path)
		case "replicas":
			if i, ok := p.integer(v, path); ok {
				r.Replicas = i
			}
		}
	})
	if n.Kind != yaml.MappingNode {
		return r
	}
	if !seen["name"] {
		p.errs = append(p.errs, field.Required(path.Child("name"), "nvidia.com/gpu or nvidia.com/mig-<profile>"))
	}
	if !seen["replicas"] {
		p.errs = append(p.errs, field.Required(path.Child("replicas"), "the number of shares per device, >= 1"))
	}
	return r
}

const devicesHelp = `must be "all", a count of devices >= 1, or a list of GPU indexes (0), MIG indexes ("0:1") and UUIDs ("GPU-...", "MIG-...")`

func (p *parser) devices(n *yaml.Node, path *field.Path) ReplicatedDevices {
	n = deref(n)
	switch {
	case isNull(n):
		return ReplicatedDevices{All: true}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		if n.Value == "all" {
			return ReplicatedDevices{All: true}
		}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int":
		var count int
		if err := n.Decode(&count); err == nil && count >= 1 {
			return ReplicatedDevices{Count: count}
		}
	case n.Kind == yaml.SequenceNode:
		if len(n.Content) == 0 {
			p.errs = append(p.errs, field.Invalid(path, "[]", "must not be empty; "+devicesHelp))
			return ReplicatedDevices{List: []string{}}
		}
		list := make([]string, 0, len(n.Content))
		seen := map[string]bool{}
		for i, item := range n.Content {
			ref, ok := deviceRef(deref(item))
			if !ok {
				p.errs = append(p.errs, field.Invalid(path.Index(i), describe(item), "must be a GPU index (0), a MIG index (\"0:1\"), a GPU UUID (\"GPU-<uuid>\") or a MIG UUID (\"MIG-<uuid>\")"))
				continue
			}
			if seen[strings.ToLower(ref)] {
				p.errs = append(p.errs, field.Duplicate(path.Index(i), ref))
				continue
			}
			seen[strings.ToLower(ref)] = true
			list = append(list, ref)
		}
		return ReplicatedDevices{List: list}
	}
	p.errs = append(p.errs, field.Invalid(path, describe(n), devicesHelp))
	return ReplicatedDevices{All: true}
}

// deviceRef returns a devices list entry in canonical form.
func deviceRef(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	switch n.ShortTag() {
	case "!!int":
		var i uint64
		if err := n.Decode(&i); err != nil {
			return "", false
		}
		return strconv.FormatUint(i, 10), true
	case "!!str":
		s := n.Value
		if isDigits(s) {
			i, err := strconv.ParseUint(s, 10, 31)
			return strconv.FormatUint(i, 10), err == nil
		}
		if gpu, mig, ok := strings.Cut(s, ":"); ok && isDigits(gpu) && isDigits(mig) {
			g, err1 := strconv.ParseUint(gpu, 10, 31)
			m, err2 := strconv.ParseUint(mig, 10, 31)
			return fmt.Sprintf("%d:%d", g, m), err1 == nil && err2 == nil
		}
		if isGPUUUID(s) || isMIGUUID(s) {
			return s, true
		}
	}
	return "", false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return len(s) == 36 && err == nil
}

// isGPUUUID matches GPU-<uuid>.
func isGPUUUID(s string) bool {
	rest, ok := strings.CutPrefix(s, "GPU-")
	return ok && isUUID(rest)
}

// isMIGUUID matches MIG-<uuid> (R470 and later) and MIG-GPU-<uuid>/<gi>/<ci> (older drivers).
func isMIGUUID(s string) bool {
	rest, ok := strings.CutPrefix(s, "MIG-")
	if !ok {
		return false
	}
	if isUUID(rest) {
		return true
	}
	parts := strings.Split(rest, "/")
	return len(parts) == 3 && isGPUUUID(parts[0]) && isDigits(parts[1]) && isDigits(parts[2])
}

// migProfileRE matches a MIG profile as it appears in a resource name:
// [<n>c.]<n>g.<n>gb followed by attributes such as ".me", ".me.all", ".gfx", "-me".
var migProfileRE = regexp.MustCompile(`^([1-9][0-9]*c\.)?[1-9][0-9]*g\.[1-9][0-9]*gb([.-][a-z][a-z0-9]*)*$`)

// canonicalResourceName puts a bare name in nvidia.com, as NVIDIA's plugin
// does, and writes a MIG profile's "+" attributes with ".".
func canonicalResourceName(name string) string {
	if name == "" {
		return ""
	}
	if !strings.Contains(name, "/") {
		name = ResourcePrefix + "/" + name
	}
	if profile, ok := strings.CutPrefix(name, MIGResourcePrefix); ok {
		name = MIGResourceName(profile)
	}
	return name
}

// validate checks values; types and shapes were checked while reading.
func (p *parser) validate() {
	c := p.c
	if c.Version != Version {
		p.errs = append(p.errs, field.NotSupported(field.NewPath("version"), c.Version, []string{Version}))
	}
	flags := field.NewPath("flags")
	if !slices.Contains(migStrategies, c.Flags.MIGStrategy) {
		p.errs = append(p.errs, field.NotSupported(flags.Child("migStrategy"), string(c.Flags.MIGStrategy), migStrategies))
	}
	plugin := flags.Child("plugin")
	dls := plugin.Child("deviceListStrategy")
	if len(c.Flags.Plugin.DeviceListStrategies) == 0 {
		p.errs = append(p.errs, field.Required(dls, fmt.Sprintf("one or more of %s", quoteList(deviceListStrategies))))
	}
	seenDLS := map[DeviceListStrategy]bool{}
	for i, s := range c.Flags.Plugin.DeviceListStrategies {
		path := dls
		if p.dlsIsList {
			path = dls.Index(i)
		}
		switch {
		case !slices.Contains(deviceListStrategies, s):
			p.errs = append(p.errs, field.NotSupported(path, string(s), deviceListStrategies))
		case seenDLS[s]:
			p.errs = append(p.errs, field.Duplicate(path, string(s)))
		}
		seenDLS[s] = true
	}
	if !slices.Contains(deviceIDStrategies, c.Flags.Plugin.DeviceIDStrategy) {
		p.errs = append(p.errs, field.NotSupported(plugin.Child("deviceIDStrategy"), string(c.Flags.Plugin.DeviceIDStrategy), deviceIDStrategies))
	}
	if c.IsSet("flags.plugin.cdiAnnotationPrefix") {
		prefix := strings.TrimSuffix(c.Flags.Plugin.CDIAnnotationPrefix, "/")
		if errs := validation.IsDNS1123Subdomain(prefix); len(errs) > 0 || !strings.HasSuffix(c.Flags.Plugin.CDIAnnotationPrefix, "/") {
			p.errs = append(p.errs, field.Invalid(plugin.Child("cdiAnnotationPrefix"), c.Flags.Plugin.CDIAnnotationPrefix, "must be a DNS subdomain followed by \"/\", like \"cdi.k8s.io/\""))
		}
	}

	resources := field.NewPath("sharing", "timeSlicing", "resources")
	names := map[string]int{} // name -> index of its first entry
	valid := make([]bool, len(c.Sharing.TimeSlicing.Resources))
	for i, r := range c.Sharing.TimeSlicing.Resources {
		path := resources.Index(i)
		valid[i] = p.validateName(r.Name, path.Child("name"))
		if valid[i] {
			// Tessera honours devices, so one resource may appear in several
			// entries with different replica counts, as long as each entry
			// selects its devices; overlaps are found when the devices are
			// resolved on the node.
			if j, dup := names[r.Name]; dup && (r.Devices.All || c.Sharing.TimeSlicing.Resources[j].Devices.All) {
				p.errs = append(p.errs, field.Invalid(path.Child("name"), r.Name,
					fmt.Sprintf("duplicate: resources[%d] has this name and one of the two shares all devices; give each entry a devices list", j)))
				valid[i] = false
			} else if !dup {
				names[r.Name] = i
			}
		}
		if r.Rename != "" {
			if msg := extendedResourceNameError(r.Rename); msg != "" {
				p.errs = append(p.errs, field.Invalid(path.Child("rename"), r.Rename, msg))
				valid[i] = false
			}
		}
		if !p.c.IsSet(path.Child("replicas").String()) {
			continue // missing or not an integer: reported while reading
		}
		switch {
		case r.Replicas < 1:
			p.errs = append(p.errs, field.Invalid(path.Child("replicas"), r.Replicas, "must be >= 1"))
		case r.Replicas > MaxReplicas:
			p.errs = append(p.errs, field.Invalid(path.Child("replicas"), r.Replicas, fmt.Sprintf("must be <= %d", MaxReplicas)))
		}
	}
	// Each entry is advertised under its own name: a rename may not take
	// another entry's name or another entry's rename.
	advertised := map[string]int{}
	for i, r := range c.Sharing.TimeSlicing.Resources {
		if !valid[i] || r.Rename == "" || r.Rename == r.Name {
			continue
		}
		path := resources.Index(i).Child("rename")
		if j, ok := names[r.Rename]; ok {
			p.errs = append(p.errs, field.Invalid(path, r.Rename, fmt.Sprintf("is the name of resources[%d]", j)))
			continue
		}
		if j, ok := advertised[r.Rename]; ok && c.Sharing.TimeSlicing.Resources[j].Name != r.Name {
			p.errs = append(p.errs, field.Invalid(path, r.Rename, fmt.Sprintf("duplicate: resources[%d] is renamed to this name too", j)))
			continue
		}
		if _, ok := advertised[r.Rename]; !ok {
			advertised[r.Rename] = i
		}
	}
}

func (p *parser) validateName(name string, path *field.Path) bool {
	if name == "" {
		if p.c.IsSet(path.String()) { // name: ""; a missing name was reported while reading
			p.errs = append(p.errs, field.Required(path, "nvidia.com/gpu or nvidia.com/mig-<profile>"))
		}
		return false
	}
	if name == ResourceGPU {
		return true
	}
	if profile, ok := strings.CutPrefix(name, MIGResourcePrefix); ok && migProfileRE.MatchString(profile) && extendedResourceNameError(name) == "" {
		return true
	}
	p.errs = append(p.errs, field.Invalid(path, name, "must be nvidia.com/gpu or nvidia.com/mig-<profile> (for example nvidia.com/mig-1g.10gb)"))
	return false
}

// extendedResourceNameError applies the kubelet's rule for extended resource
// names: <domain>/<name> with a domain outside kubernetes.io, and
// "requests.<domain>/<name>" a qualified name.
func extendedResourceNameError(name string) string {
	domain, _, ok := strings.Cut(name, "/")
	if !ok {
		return "must be a fully-qualified extended resource name, <domain>/<name>"
	}
	if domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") {
		return "must not be in the kubernetes.io domain"
	}
	if errs := validation.IsQualifiedName("requests." + name); len(errs) > 0 {
		return "must be a valid extended resource name: " + strings.Join(errs, "; ")
	}
	return ""
}

// fields walks a mapping: it reports a value that is not a mapping, duplicate
// keys and unknown keys, records ignored keys, and calls fn for known keys.
// A null value is an empty mapping.
func (p *parser) fields(n *yaml.Node, path *field.Path, known, ignored []string, fn func(key string, v *yaml.Node, path *field.Path)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.errs = append(p.errs, field.TypeInvalid(orRoot(path), describe(n), "must be a mapping"))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		key := k.Value
		child := child(path, key)
		if seen[key] {
			p.errs = append(p.errs, field.Duplicate(child, key))
			continue
		}
		seen[key] = true
		switch {
		case slices.Contains(known, key):
			fn(key, v, child)
		case slices.Contains(ignored, key):
			p.c.Ignored = append(p.c.Ignored, child.String())
		default:
			all := append(append([]string{}, known...), ignored...)
			p.errs = append(p.errs, field.Forbidden(child, fmt.Sprintf("unknown field (known fields of %s: %s)", orRoot(path), strings.Join(all, ", "))))
		}
	}
}

func child(path *field.Path, key string) *field.Path {
	if path == nil {
		return field.NewPath(key)
	}
	return path.Child(key)
}

func orRoot(path *field.Path) *field.Path {
	if path == nil {
		return field.NewPath("<top level>")
	}
	return path
}

func (p *parser) markSet(path *field.Path) { p.c.set[path.String()] = true }

func (p *parser) str(n *yaml.Node, path *field.Path) (string, bool) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		p.markSet(path)
		return n.Value, true
	}
	p.errs = append(p.errs, field.TypeInvalid(path, describe(n), "must be a string"))
	return "", false
}

// yaml11Bools are the YAML 1.1 spellings of booleans that NVIDIA's parser
// (sigs.k8s.io/yaml) accepts and YAML 1.2 reads as strings.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
}

func (p *parser) boolean(n *yaml.Node, path *field.Path) (bool, bool) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		switch {
		case n.ShortTag() == "!!bool":
			var b bool
			if err := n.Decode(&b); err == nil {
				p.markSet(path)
				return b, true
			}
		case n.ShortTag() == "!!str" && n.Style == 0:
			if b, ok := yaml11Bools[n.Value]; ok {
				p.markSet(path)
				return b, true
			}
		}
	}
	p.errs = append(p.errs, field.TypeInvalid(path, describe(n), "must be true or false"))
	return false, false
}

func (p *parser) integer(n *yaml.Node, path *field.Path) (int, bool) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var i int
		if err := n.Decode(&i); err == nil {
			p.markSet(path)
			return i, true
		}
	}
	p.errs = append(p.errs, field.TypeInvalid(path, describe(n), "must be an integer"))
	return 0, false
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe renders a node for an error message.
func describe(n *yaml.Node) string {
	n = deref(n)
	switch {
	case n == nil:
		return "null"
	case n.Kind == yaml.MappingNode:
		return "<mapping>"
	case n.Kind == yaml.SequenceNode:
		return "<list>"
	default:
		return n.Value
	}
}

func quoteList[T ~string](list []T) string {
	q := make([]string, len(list))
	for i, v := range list {
		q[i] = strconv.Quote(string(v))
	}
	return strings.Join(q, ", ")
}
