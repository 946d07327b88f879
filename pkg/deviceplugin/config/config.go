package config

import (
	"slices"
	"strings"
)

// Version is the only configuration file version understood. A file without a
// version is read as this one, as NVIDIA's plugin does.
const Version = "v1"

// MIGStrategy says how MIG devices are advertised.
type MIGStrategy string

// MIG strategies, as NVIDIA names them.
const (
	// MIGStrategyNone advertises whole GPUs only.
	MIGStrategyNone MIGStrategy = "none"
	// MIGStrategySingle advertises every MIG device as nvidia.com/gpu.
	MIGStrategySingle MIGStrategy = "single"
	// MIGStrategyMixed advertises each MIG profile as its own resource,
	// nvidia.com/mig-<profile>.
	MIGStrategyMixed MIGStrategy = "mixed"
)

// DeviceListStrategy says how Allocate passes the devices to the container runtime.
type DeviceListStrategy string

// Device list strategies, as NVIDIA names them.
const (
	// DeviceListStrategyEnvVar sets NVIDIA_VISIBLE_DEVICES.
	DeviceListStrategyEnvVar DeviceListStrategy = "envvar"
	// DeviceListStrategyVolumeMounts lists devices as volume mounts under /var/run/nvidia-container-devices.
	DeviceListStrategyVolumeMounts DeviceListStrategy = "volume-mounts"
	// DeviceListStrategyCDIAnnotations passes CDI device names in annotations.
	DeviceListStrategyCDIAnnotations DeviceListStrategy = "cdi-annotations"
	// DeviceListStrategyCDICRI passes CDI device names in the CRI's CDIDevices field.
	DeviceListStrategyCDICRI DeviceListStrategy = "cdi-cri"
)

// DeviceIDStrategy says how a device is named to the container runtime.
type DeviceIDStrategy string

// Device ID strategies, as NVIDIA names them.
const (
	DeviceIDStrategyUUID  DeviceIDStrategy = "uuid"
	DeviceIDStrategyIndex DeviceIDStrategy = "index"
)

// DefaultCDIAnnotationPrefix is the prefix of the CDI annotations written with
// the cdi-annotations device list strategy.
const DefaultCDIAnnotationPrefix = "cdi.k8s.io/"

// Resource names Tessera advertises.
const (
	// ResourcePrefix is the domain of every resource Tessera advertises and
	// the one a bare name in the file ("gpu") is put in.
	ResourcePrefix = "nvidia.com"
	// ResourceGPU is the whole-GPU resource (and, with MIG strategy single, every MIG device).
	ResourceGPU = ResourcePrefix + "/gpu"
	// MIGResourcePrefix starts a MIG resource name with MIG strategy mixed.
	MIGResourcePrefix = ResourcePrefix + "/mig-"
	// SharedSuffix is appended to a shared resource's name with renameByDefault.
	SharedSuffix = ".shared"
)

// MaxReplicas bounds replicas so that a typo cannot make the plugin
// advertise millions of devices.
const MaxReplicas = 1024

// Config is one device-plugin configuration file, with defaults applied.
type Config struct {
	Version string
	Flags   Flags
	Sharing Sharing
	// Ignored lists, as field paths ("flags.nvidiaDriverRoot"), fields of
	// NVIDIA's format that the file sets and Tessera accepts but does not
	// act on. Callers log them.
	Ignored []string

	// set holds the paths of fields the file set explicitly.
	set map[string]bool
}

// Flags are the plugin settings NVIDIA also accepts on its command line.
type Flags struct {
	// MIGStrategy defaults to MIGStrategyNone.
	MIGStrategy MIGStrategy
	// FailOnInitError defaults to true: the agent refuses to start when the
	// GPUs cannot be read, instead of advertising nothing.
	FailOnInitError bool
	Plugin          PluginFlags
}

// PluginFlags are flags.plugin.
type PluginFlags struct {
	PassDeviceSpecs bool
	// DeviceListStrategies defaults to [envvar]. The file may give one string
	// or a list.
	DeviceListStrategies []DeviceListStrategy
	// DeviceIDStrategy defaults to DeviceIDStrategyUUID.
	DeviceIDStrategy DeviceIDStrategy
	// CDIAnnotationPrefix defaults to DefaultCDIAnnotationPrefix.
	CDIAnnotationPrefix string
}

// Sharing is the sharing section. Only time-slicing is supported; MPS is
// refused when parsing.
type Sharing struct {
	TimeSlicing TimeSlicing
}

// TimeSlicing is sharing.timeSlicing.
type TimeSlicing struct {
	// RenameByDefault gives every shared resource without a rename the name
	// <name>.shared. Parse applies it, so Rename is final.
	RenameByDefault bool
	// FailRequestsGreaterThanOne makes Allocate refuse a request for more than
	// one unit of a shared resource.
	FailRequestsGreaterThanOne bool
	Resources                  []ReplicatedResource
}

// ReplicatedResource is one entry of sharing.timeSlicing.resources.
type ReplicatedResource struct {
	// Name is the resource shared: nvidia.com/gpu or nvidia.com/mig-<profile>,
	// canonical (prefixed, a profile's "+" written as ".").
	Name string
	// Rename is the name the shares are advertised under; empty to keep Name.
	Rename string
	// Devices selects which devices of the resource are shared.
	Devices ReplicatedDevices
	// Replicas is the number of shares each selected device is split into.
	Replicas int
}

// AdvertisedName is the resource name the shares are advertised under.
func (r ReplicatedResource) AdvertisedName() string {
	if r.Rename != "" {
		return r.Rename
	}
	return r.Name
}

// ReplicatedDevices is a union: exactly one of All, Count and List is set.
type ReplicatedDevices struct {
	// All selects every device of the resource (the default).
	All bool
	// Count selects the first Count devices.
	Count int
	// List selects devices by reference, each in canonical form: a GPU index
	// ("0"), a MIG index ("0:1": MIG device 1 of GPU 0), a GPU UUID
	// ("GPU-...") or a MIG UUID ("MIG-...").
	List []string
}

// Default returns the configuration used when a node has no file.
func Default() *Config {
	c := &Config{Version: Version}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.Version == "" {
		c.Version = Version
	}
	if !c.IsSet("flags.migStrategy") {
		c.Flags.MIGStrategy = MIGStrategyNone
	}
	if !c.IsSet("flags.failOnInitError") {
		c.Flags.FailOnInitError = true
	}
	if !c.IsSet("flags.plugin.deviceListStrategy") {
		c.Flags.Plugin.DeviceListStrategies = []DeviceListStrategy{DeviceListStrategyEnvVar}
	}
	if !c.IsSet("flags.plugin.deviceIDStrategy") {
		c.Flags.Plugin.DeviceIDStrategy = DeviceIDStrategyUUID
	}
	if !c.IsSet("flags.plugin.cdiAnnotationPrefix") {
		c.Flags.Plugin.CDIAnnotationPrefix = DefaultCDIAnnotationPrefix
	}
	ts := &c.Sharing.TimeSlicing
	for i := range ts.Resources {
		r := &ts.Resources[i]
		if ts.RenameByDefault && r.Rename == "" && r.Name != "" {
			r.Rename = r.Name + SharedSuffix
		}
		if !r.Devices.All && r.Devices.Count == 0 && r.Devices.List == nil {
			r.Devices.All = true
		}
	}
}

// IsSet reports whether the file set the field at path (for example
// "flags.migStrategy"), as opposed to it holding its default. A caller that
// lets a command-line flag override the file uses it.
func (c *Config) IsSet(path string) bool {
	return c.set[path]
}

// Resource returns the time-slicing entry for a resource name (nvidia.com/gpu,
// nvidia.com/mig-1g.10gb; a bare or "+" spelling is canonicalised first).
func (c *Config) Resource(name string) (ReplicatedResource, bool) {
	name = canonicalResourceName(name)
	for _, r := range c.Sharing.TimeSlicing.Resources {
		if r.Name == name {
			return r, true
		}
	}
	return ReplicatedResource{}, false
}

// MIGResourceName is the resource a MIG profile is advertised as with MIG
// strategy mixed: "1g.10gb" -> "nvidia.com/mig-1g.10gb". The attributes of
// media-extension profiles are joined with "." because "+" is not allowed in a
// resource name: "1g.10gb+me" -> "nvidia.com/mig-1g.10gb.me".
func MIGResourceName(profile string) string {
	return MIGResourcePrefix + strings.NewReplacer("+", ".", ",", ".").Replace(profile)
}

// IsMIGResource reports whether name is a MIG resource name (nvidia.com/mig-...).
func IsMIGResource(name string) bool {
	return strings.HasPrefix(name, MIGResourcePrefix)
}

// DeviceListStrategyEnabled reports whether s is among the configured device list strategies.
func (f PluginFlags) DeviceListStrategyEnabled(s DeviceListStrategy) bool {
	return slices.Contains(f.DeviceListStrategies, s)
}
