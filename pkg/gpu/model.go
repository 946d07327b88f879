package gpu

import (
	"fmt"
	"strings"
)

// Machine is a point-in-time snapshot of a node's GPUs.
type Machine struct {
	// Backend names the backend that produced the snapshot ("nvml", "sim:dgx-h100", "none").
	Backend  string
	Versions Versions
	Devices  []Device
	// Topology holds the pairwise interconnect between Devices, indexed like Devices.
	Topology Topology
	// Failed lists GPUs the backend saw but could not read, with the reason.
	// They are absent from Devices and Topology.
	Failed []DeviceFailure
	// Reason says why a machine has no devices (none backend); empty otherwise.
	Reason string
}

// DeviceFailure is a GPU that could not be read.
type DeviceFailure struct {
	Index int
	UUID  string // empty when the UUID itself could not be read
	Err   error
}

// Versions are the driver-side versions a node reports.
type Versions struct {
	Driver string // e.g. "550.54.15"
	NVML   string // e.g. "12.550.54.15"
	// CUDADriver is the highest CUDA version the driver supports, "12.4".
	CUDADriver string
}

// Architecture is a GPU architecture family as GPU Feature Discovery names it.
type Architecture string

// Architectures known to Tessera.
const (
	ArchKepler    Architecture = "kepler"
	ArchMaxwell   Architecture = "maxwell"
	ArchPascal    Architecture = "pascal"
	ArchVolta     Architecture = "volta"
	ArchTuring    Architecture = "turing"
	ArchAmpere    Architecture = "ampere"
	ArchAda       Architecture = "ada-lovelace"
	ArchHopper    Architecture = "hopper"
	ArchBlackwell Architecture = "blackwell"
	ArchUnknown   Architecture = "unknown"
)

// ComputeCapability is a CUDA compute capability, e.g. 9.0.
type ComputeCapability struct{ Major, Minor int }

func (c ComputeCapability) String() string { return fmt.Sprintf("%d.%d", c.Major, c.Minor) }

// Device is one physical GPU.
type Device struct {
	Index int
	UUID  string
	// Name is the marketing name as NVML reports it: "NVIDIA H100 80GB HBM3".
	Name string
	// Product is Name as GPU Feature Discovery writes the nvidia.com/gpu.product
	// label: "NVIDIA-H100-80GB-HBM3".
	Product           string
	MemoryMiB         uint64
	ComputeCapability ComputeCapability
	Architecture      Architecture
	// PCIBusID in the canonical lower-case domain form "0000:1b:00.0".
	PCIBusID string
	// PCIDeviceID is the PCI device and vendor ID as NVML reports it
	// (device<<16 | vendor): 0x233010DE for an H100 SXM5 80GB. MIG configs
	// select GPUs by it (mig-parted's device-filter).
	PCIDeviceID uint32
	// NUMANode is the host NUMA node the GPU is attached to; -1 when unknown.
	NUMANode int
	// Minor is the minor number of the GPU's /dev/nvidia<N> character
	// device (major 195); -1 when the driver does not say.
	Minor      int
	MIGCapable bool
	MIGEnabled bool
	// MIGPendingEnabled differs from MIGEnabled when a mode change waits for a reset.
	MIGPendingEnabled bool
	MIGDevices        []MIGDevice
	// MIGProfiles is the GPU's MIG geometry (every GPU-instance profile with
	// its legal placements); empty for GPUs that are not MIG capable.
	MIGProfiles []MIGProfileInfo
}

// MIGDevice is one MIG slice: a GPU instance with a compute instance inside it.
type MIGDevice struct {
	// Parent is the index of the physical GPU.
	Parent int
	UUID   string
	// Profile is the canonical MIG profile name as mig-parted and the device
	// plugin write it: "1g.10gb", "1g.10gb+me", "3g.40gb", "1c.3g.40gb".
	Profile string
	// GPUInstanceID and ComputeInstanceID are NVML's IDs within the parent GPU.
	GPUInstanceID     int
	ComputeInstanceID int
	Placement         Placement
	MemoryMiB         uint64
	// MultiprocessorCount is the number of SMs in the compute instance.
	MultiprocessorCount int
	// GPUSlices and ComputeSlices are the compute slices of the GPU instance
	// and of the compute instance (NVML's GpuInstanceSliceCount and
	// ComputeInstanceSliceCount): 3 and 3 for 3g.40gb, 3 and 1 for 1c.3g.40gb.
	GPUSlices, ComputeSlices int
	// Engines are the engines the instance has, as NVML's MIG device
	// attributes count them.
	Engines MIGEngines
}

// MIGEngines counts a MIG device's copy and media engines.
type MIGEngines struct {
	Copy, Decoder, Encoder, JPEG, OFA int
}

// Placement is where a GPU instance sits in the GPU's memory slices.
type Placement struct {
	Start int
	Size  int
}

func (p Placement) String() string { return fmt.Sprintf("%d:%d", p.Start, p.Size) }

// Overlaps reports whether two placements share a slice.
func (p Placement) Overlaps(o Placement) bool {
	return p.Start < o.Start+o.Size && o.Start < p.Start+p.Size
}

// MIGProfileInfo describes a GPU-instance profile the GPU offers and where it may be placed.
type MIGProfileInfo struct {
	// Name is the canonical profile name ("1g.10gb", "1g.10gb+me").
	Name string
	// NVMLProfileID is NVML's GPU instance profile ID (GPU_INSTANCE_PROFILE_*).
	NVMLProfileID       int
	SliceCount          int
	MemoryMiB           uint64
	MultiprocessorCount int
	// MaxInstances is how many instances of this profile fit on an empty GPU.
	MaxInstances int
	// Placements are every legal placement on an empty GPU, ascending by Start.
	Placements []Placement
}

// ProductName turns an NVML device name into the value GPU Feature Discovery
// writes to nvidia.com/gpu.product: runs of white space become single dashes.
func ProductName(name string) string {
	return strings.Join(strings.Fields(name), "-")
}
