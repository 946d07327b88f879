package mig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"
)

// Version is the only config file version mig-parted and Tessera accept.
const Version = "v1"

// File is a parsed mig-parted config file: named configs, each a list of
// entries selecting GPUs and giving their MIG layout.
type File struct {
	// Version is "v1".
	Version string `yaml:"version"`
	// Configs maps a config name (the nvidia.com/mig.config label value) to its entries.
	Configs map[string][]Entry `yaml:"mig-configs"`
	// Source names where the file came from (its path), for messages.
	Source string `yaml:"-"`
}

// Entry selects GPUs (by PCI device ID and index) and gives their layout.
type Entry struct {
	// DeviceFilter restricts the entry to GPUs with one of these PCI device
	// IDs (device<<16 | vendor, written "0x233010DE"); empty selects every GPU.
	// In YAML it is a single string or a list of strings.
	DeviceFilter DeviceFilter `yaml:"device-filter,omitempty"`
	// Devices is "all" or a list of GPU indices.
	Devices Devices `yaml:"devices"`
	// MIGEnabled is the MIG mode the selected GPUs must have.
	MIGEnabled bool `yaml:"mig-enabled"`
	// MIGDevices maps a MIG profile ("1g.10gb", "1g.10gb+me") to how many
	// instances each selected GPU must have. Must be empty when MIGEnabled is false.
	MIGDevices map[string]int `yaml:"mig-devices,omitempty"`
	// Line is the line of the entry in the file (1-based; 0 when unknown).
	Line int `yaml:"-"`
}

// DeviceFilter is a list of PCI device IDs (device<<16 | vendor).
type DeviceFilter []uint32

// Matches reports whether the filter selects a GPU with this PCI device ID;
// an empty filter selects every GPU.
func (f DeviceFilter) Matches(pciDeviceID uint32) bool {
	return len(f) == 0 || slices.Contains(f, pciDeviceID)
}

// String writes the filter as mig-parted does: "0x20B010DE,0x20B110DE".
func (f DeviceFilter) String() string {
	s := make([]string, len(f))
	for i, id := range f {
		s[i] = FormatDeviceID(id)
	}
	return strings.Join(s, ",")
}

// FormatDeviceID writes a PCI device ID as device-filter does: "0x233010DE".
func FormatDeviceID(id uint32) string { return fmt.Sprintf("0x%08X", id) }

// Devices selects GPUs by index: every GPU, or the listed indices.
type Devices struct {
	All     bool
	Indices []int
}

// Selects reports whether GPU index is selected.
func (d Devices) Selects(index int) bool {
	return d.All || slices.Contains(d.Indices, index)
}

// String writes "all" or the index list "[0 1 2]".
func (d Devices) String() string {
	if d.All {
		return "all"
	}
	return fmt.Sprint(d.Indices)
}

// profileNameRE is the syntax of a MIG profile name as mig-parted accepts it:
// an optional compute-instance part ("1c."), the GPU-instance part
// ("3g.40gb") and attributes ("+me", "+me.all", "-me", "+gfx").
var profileNameRE = regexp.MustCompile(`^(?:[1-9][0-9]*c\.)?[1-9][0-9]*g\.[1-9][0-9]*gb(?:[+-][a-z]+(?:\.[a-z]+)*)*$`)

// Parse parses and validates a config file's content (YAML or JSON); source
// names the file in errors. Unknown or repeated fields, a wrong version,
// malformed device filters, indices, profile names or counts, and MIG devices
// on an entry with MIG disabled are errors; the error lists every problem,
// each with its line.
func Parse(data []byte, source string) (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("invalid mig config file %s: the file is empty", source)
		}
		return nil, fmt.Errorf("invalid mig config file %s: %w", source, syntaxError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("invalid mig config file %s: %w", source, syntaxError(err))
		}
		return nil, fmt.Errorf("invalid mig config file %s: line %d: the file holds more than one yaml document", source, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p := &parser{f: &File{Source: source}}
	p.file(root)
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("invalid mig config file %s: %w", source, errors.Join(p.errs...))
	}
	return p.f, nil
}

// syntaxError says where a YAML syntax error is: the line and column where
// the parser found the problem, and the construct it was reading when that
// construct began earlier (an unclosed quote or bracket, a block whose
// indentation broke). go.yaml.in/yaml/v3 reported the line where the
// enclosing construct began, counted from 0, so a bad indentation on line 6
// of an entry that began on line 4 was reported as "line 3"; v4 keeps both
// marks in yaml.LoadError.
func syntaxError(err error) error {
	var le *yaml.LoadError
	if !errors.As(err, &le) || le.Mark.Line == 0 {
		return err
	}
	msg := fmt.Sprintf("line %d, column %d: %s", le.Mark.Line, le.Mark.Column, le.Message)
	if le.ContextMsg != "" && le.ContextMark.Line > 0 && le.ContextMark != le.Mark {
		msg += fmt.Sprintf(" (%s that began on line %d, column %d)", le.ContextMsg, le.ContextMark.Line, le.ContextMark.Column)
	}
	return &yamlSyntaxError{msg: msg, err: err}
}

// yamlSyntaxError is a YAML syntax error with its position; it unwraps to
// the parser's error.
type yamlSyntaxError struct {
	msg string
	err error
}

func (e *yamlSyntaxError) Error() string { return "yaml syntax: " + e.msg }
func (e *yamlSyntaxError) Unwrap() error { return e.err }

// Load reads and parses the config file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading mig config file: %w", err)
	}
	return Parse(data, path)
}

// Names returns the config names, sorted.
func (f *File) Names() []string {
	return slices.Sorted(maps.Keys(f.Configs))
}

type parser struct {
	f    *File
	errs []error
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, args...)))
}

// mapping calls field for every key of mapping node n, rejecting keys not in
// allowed, repeated keys and a node that is not a mapping. what names n.
func (p *parser) mapping(n *yaml.Node, what string, allowed []string, field func(key string, k, v *yaml.Node)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping, not %s", what, kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		key := k.Value
		if line, ok := seen[key]; ok {
			p.errorf(k, "%s: %q is repeated (first on line %d)", what, key, line)
			continue
		}
		seen[key] = k.Line
		if allowed != nil && !slices.Contains(allowed, key) {
			p.errorf(k, "%s: unknown field %q (want %s)", what, key, strings.Join(allowed, ", "))
			continue
		}
		field(key, k, v)
	}
}

func (p *parser) file(n *yaml.Node) {
	seen := map[string]bool{}
	p.mapping(n, "the file", []string{"version", "mig-configs"}, func(key string, _, v *yaml.Node) {
		seen[key] = true
		switch key {
		case "version":
			if v.Kind != yaml.ScalarNode || v.Value != Version {
				p.errorf(v, "version must be %q, not %q", Version, v.Value)
				return
			}
			p.f.Version = v.Value
		case "mig-configs":
			p.configs(v)
		}
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	if !seen["version"] {
		p.errorf(n, "version is missing (want %q)", Version)
	}
	if !seen["mig-configs"] {
		p.errorf(n, "mig-configs is missing")
	}
}

func (p *parser) configs(n *yaml.Node) {
	p.f.Configs = map[string][]Entry{}
	p.mapping(n, "mig-configs", nil, func(name string, k, v *yaml.Node) {
		if name == "" {
			p.errorf(k, "mig-configs: a config has an empty name")
			return
		}
		if v.Kind != yaml.SequenceNode {
			p.errorf(v, "config %q must be a list of entries, not %s", name, kindName(v))
			return
		}
		if len(v.Content) == 0 {
			p.errorf(v, "config %q has no entries", name)
		}
		entries := make([]Entry, 0, len(v.Content))
		for i, en := range v.Content {
			entries = append(entries, p.entry(resolve(en), fmt.Sprintf("config %q entry %d", name, i+1)))
		}
		p.f.Configs[name] = entries
	})
	if n.Kind == yaml.MappingNode && len(n.Content) == 0 {
		p.errorf(n, "mig-configs holds no config")
	}
}

func (p *parser) entry(n *yaml.Node, what string) Entry {
	e := Entry{Line: n.Line}
	hasDevices := false
	p.mapping(n, what, []string{"device-filter", "devices", "mig-enabled", "mig-devices"}, func(key string, _, v *yaml.Node) {
		switch key {
		case "device-filter":
			e.DeviceFilter = p.deviceFilter(v, what)
		case "devices":
			hasDevices = true
			e.Devices = p.devices(v, what)
		case "mig-enabled":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				p.errorf(v, "%s: mig-enabled must be true or false, not %q", what, v.Value)
				return
			}
			e.MIGEnabled = v.Value == "true"
		case "mig-devices":
			e.MIGDevices = p.migDevices(v, what)
		}
	})
	if n.Kind != yaml.MappingNode {
		return e
	}
	if !hasDevices {
		p.errorf(n, "%s: devices is missing (want all or a list of gpu indices)", what)
	}
	if !e.MIGEnabled && len(e.MIGDevices) > 0 {
		p.errorf(n, "%s: mig-devices must be empty when mig-enabled is false", what)
	}
	return e
}

func (p *parser) deviceFilter(n *yaml.Node, what string) DeviceFilter {
	var items []*yaml.Node
	n = resolve(n)
	switch n.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{n}
	case yaml.SequenceNode:
		items = n.Content
	default:
		p.errorf(n, "%s: device-filter must be a PCI device ID or a list of them, not %s", what, kindName(n))
		return nil
	}
	var out DeviceFilter
	for _, it := range items {
		id, err := parseDeviceID(it)
		if err != nil {
			p.errorf(it, "%s: device-filter %q: %v", what, it.Value, err)
			continue
		}
		out = append(out, id)
	}
	return out
}

func parseDeviceID(n *yaml.Node) (uint32, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("want a PCI device ID such as \"0x233010DE\", not %s", kindName(n))
	}
	s := strings.TrimPrefix(strings.TrimPrefix(n.Value, "0x"), "0X")
	id, err := strconv.ParseUint(s, 16, 32)
	if err != nil || s == "" {
		return 0, errors.New(`want a PCI device ID (device and vendor, hexadecimal) such as "0x233010DE"`)
	}
	return uint32(id), nil
}

func (p *parser) devices(n *yaml.Node, what string) Devices {
	n = resolve(n)
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "all" {
			return Devices{All: true}
		}
	case yaml.SequenceNode:
		d := Devices{Indices: []int{}}
		for _, it := range n.Content {
			i, err := strconv.Atoi(it.Value)
			if it.Kind != yaml.ScalarNode || err != nil || i < 0 {
				p.errorf(it, "%s: devices: %q is not a gpu index (want an integer >= 0)", what, it.Value)
				continue
			}
			if slices.Contains(d.Indices, i) {
				p.errorf(it, "%s: devices: gpu index %d is listed twice", what, i)
				continue
			}
			d.Indices = append(d.Indices, i)
		}
		return d
	}
	p.errorf(n, "%s: devices must be all or a list of gpu indices, not %s", what, kindName(n))
	return Devices{}
}

func (p *parser) migDevices(n *yaml.Node, what string) map[string]int {
	out := map[string]int{}
	p.mapping(n, what+" mig-devices", nil, func(profile string, k, v *yaml.Node) {
		if !profileNameRE.MatchString(profile) {
			p.errorf(k, "%s: mig-devices: %q is not a mig profile name (want a name such as 1g.10gb, 3g.40gb or 1g.10gb+me)", what, profile)
			return
		}
		count, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || err != nil || count < 0 {
			p.errorf(v, "%s: mig-devices: count of %s must be an integer >= 0, not %s", what, profile, kindName(v))
			return
		}
		out[profile] = count
	})
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "an empty document"
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
