package mig

import "errors"

// Version is the only config file version mig-parted and Tessera accept.
const Version = "v1"

// errNotImplemented marks the API skeleton; it goes away with the implementation.
var errNotImplemented = errors.New("not implemented yet")

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
	return false
}

// Devices selects GPUs by index: every GPU, or the listed indices.
type Devices struct {
	All     bool
	Indices []int
}

// Selects reports whether GPU index is selected.
func (d Devices) Selects(index int) bool {
	return false
}

// Parse parses and validates a config file's content; source names the file
// in errors. Unknown fields, a wrong version, malformed device filters or
// indices, and MIG devices on an entry with MIG disabled are errors naming
// the file and line.
func Parse(data []byte, source string) (*File, error) {
	return nil, errNotImplemented
}

// Load reads and parses the config file at path.
func Load(path string) (*File, error) {
	return nil, errNotImplemented
}

// Names returns the config names, sorted.
func (f *File) Names() []string {
	return nil
}
