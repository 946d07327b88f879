package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// GPUNode is the GPU inventory of one node, published by the gpu-agent on
// that node. It is cluster-scoped, named as its Node and owned by it (an
// ownerReference), so it is garbage-collected with the Node. It has no spec:
// everything is observed state, written by the agent with server-side apply
// (field manager tessera-gpu-agent); a hand edit is reverted at the agent's
// next heartbeat.
//
// The NAME column of `kubectl get gpunodes` is the node.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=gpun,categories=tessera
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.summary.gpus`,description="Physical GPUs"
// +kubebuilder:printcolumn:name="Product",type=string,JSONPath=`.status.summary.product`,description="GPU products (nvidia.com/gpu.product)"
// +kubebuilder:printcolumn:name="Layout",type=string,JSONPath=`.status.layout.state`,description="MIG layout state (nvidia.com/mig.config.state)"
// +kubebuilder:printcolumn:name="Config",type=string,JSONPath=`.status.layout.config`,description="MIG layout (nvidia.com/mig.config)",priority=1
// +kubebuilder:printcolumn:name="Allocated",type=string,JSONPath=`.status.summary.allocation`,description="Devices held by pods / schedulable devices"
// +kubebuilder:printcolumn:name="Unhealthy",type=integer,JSONPath=`.status.summary.unhealthyGPUs`,description="GPUs that are unhealthy or could not be read"
// +kubebuilder:printcolumn:name="Driver",type=string,JSONPath=`.status.versions.driver`,priority=1
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.heartbeatTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GPUNode struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Status is the node's GPU inventory as the agent last observed it.
	// +optional
	Status GPUNodeStatus `json:"status,omitempty"`
}

// GPUNodeList is a list of GPUNodes.
//
// +kubebuilder:object:root=true
type GPUNodeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GPUNode `json:"items"`
}

// GPUNodeStatus is a node's GPU inventory.
//
// Lists are atomic: the agent is their only writer and replaces each whole
// at every write, which keeps managedFields to a few entries instead of one
// per device field.
type GPUNodeStatus struct {
	// Backend names the discovery backend: "nvml", "sim:<profile>" or "none".
	// +optional
	Backend string `json:"backend,omitempty"`
	// Reason says why the node has no GPUs (the none backend, no driver);
	// empty otherwise.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Versions are the driver and CUDA versions.
	// +optional
	Versions Versions `json:"versions,omitzero"`
	// MIGStrategy is the device plugin's MIG strategy: none, single or mixed.
	// +optional
	// +kubebuilder:validation:Enum=none;single;mixed
	MIGStrategy string `json:"migStrategy,omitempty"`
	// GPUs are the node's physical GPUs, ascending by index.
	// +optional
	// +listType=atomic
	GPUs []GPU `json:"gpus,omitempty"`
	// FailedGPUs are GPUs the driver lists but the agent could not read;
	// they are absent from GPUs and count as unhealthy.
	// +optional
	// +listType=atomic
	FailedGPUs []FailedGPU `json:"failedGPUs,omitempty"`
	// Links is the interconnect matrix in compact form: row i is GPU i of
	// GPUs (same order), one space-separated cell per GPU. A cell is "X" on
	// the diagonal, else the PCIe path (PIX, PXB, PHB, NODE, SYS, UNKNOWN,
	// as nvidia-smi topo -m names them), prefixed by "NV<n>:" for n NVLinks
	// between the pair or "NVS<n>:" when those go through an NVSwitch:
	// "X NVS18:NODE NVS18:SYS". ParseLinkCell decodes a cell.
	// +optional
	// +listType=atomic
	Links []string `json:"links,omitempty"`
	// Allocations are the devices held by containers, from the kubelet's
	// PodResources API: one entry per pod, container and resource.
	// +optional
	// +listType=atomic
	Allocations []Allocation `json:"allocations,omitempty"`
	// Layout is the node's MIG layout state.
	// +optional
	Layout Layout `json:"layout,omitzero"`
	// Summary holds totals for `kubectl get` and quick filters.
	// +optional
	Summary Summary `json:"summary,omitzero"`
	// HeartbeatTime is when the agent last confirmed this status. The
	// scheduler treats a GPUNode whose heartbeat is older than its
	// configured age as stale.
	// +optional
	HeartbeatTime metav1.Time `json:"heartbeatTime,omitzero"`
}

// Versions are a node's driver-side versions.
type Versions struct {
	// Driver is the NVIDIA driver version: "550.54.15".
	// +optional
	Driver string `json:"driver,omitempty"`
	// CUDADriver is the highest CUDA version the driver supports: "12.4".
	// +optional
	CUDADriver string `json:"cudaDriver,omitempty"`
	// NVML is the NVML library version: "12.550.54.15".
	// +optional
	NVML string `json:"nvml,omitempty"`
}

// Health of a GPU or MIG slice.
// +kubebuilder:validation:Enum=Healthy;Unhealthy
type Health string

// Health values.
const (
	Healthy   Health = "Healthy"
	Unhealthy Health = "Unhealthy"
)

// Sharing is how a device is advertised to the kubelet: under which
// extended resource, and in how many time-sliced units.
type Sharing struct {
	// Resource is the extended resource the device is advertised under:
	// nvidia.com/gpu, nvidia.com/mig-1g.10gb, or a shared name such as
	// nvidia.com/gpu.shared.
	Resource string `json:"resource"`
	// Replicas is the number of units the device is split into by
	// time-slicing; 1 when the device is handed out whole.
	// +kubebuilder:validation:Minimum=1
	Replicas int32 `json:"replicas"`
	// WholeResource, on a time-sliced GPU (Replicas > 1), is the extended
	// resource the same GPU is also advertised under whole, one device per
	// GPU, as GPU-sharing device plugins that run beside NVIDIA's do
	// (Alibaba's gpushare advertises units of each GPU beside
	// nvidia.com/gpu; every GPU of the openb traces is such a GPU). A pod
	// takes the GPU whole only while every unit is free, and no unit while
	// it is held whole. Empty when the GPU is advertised only as Resource.
	// +optional
	WholeResource string `json:"wholeResource,omitempty"`
}

// GPU is one physical GPU.
type GPU struct {
	// Index is NVML's device index.
	// +kubebuilder:validation:Minimum=0
	Index int32 `json:"index"`
	// UUID is the GPU's UUID: "GPU-...".
	UUID string `json:"uuid"`
	// Product is the product name as nvidia.com/gpu.product writes it:
	// "NVIDIA-H100-80GB-HBM3".
	Product string `json:"product"`
	// MemoryMiB is the framebuffer size in MiB.
	MemoryMiB int64 `json:"memoryMiB"`
	// ComputeCapability is the CUDA compute capability: "9.0".
	ComputeCapability string `json:"computeCapability"`
	// Architecture is the family as nvidia.com/gpu.family writes it:
	// "hopper", "ada-lovelace".
	Architecture string `json:"architecture"`
	// PCIBusID is the PCI address: "0000:1b:00.0".
	// +optional
	PCIBusID string `json:"pciBusID,omitempty"`
	// NUMANode is the host NUMA node the GPU is attached to; unset when
	// unknown.
	// +optional
	NUMANode *int32 `json:"numaNode,omitempty"`
	// Health is the GPU's health; an unhealthy GPU makes its MIG slices
	// and share units unhealthy too.
	Health Health `json:"health"`
	// HealthReason says why the GPU is unhealthy ("XID 79 (GPU has fallen
	// off the bus)"); empty when healthy.
	// +optional
	HealthReason string `json:"healthReason,omitempty"`
	// MIGCapable is true when the GPU supports MIG.
	// +optional
	MIGCapable bool `json:"migCapable,omitempty"`
	// MIGEnabled is true when MIG mode is on: the GPU is then handed out
	// only as its MIG slices, never whole.
	// +optional
	MIGEnabled bool `json:"migEnabled,omitempty"`
	// Sharing is how the whole GPU is advertised; unset when it is not
	// advertised whole (MIG enabled, or the device plugin has no
	// configuration yet).
	// +optional
	Sharing *Sharing `json:"sharing,omitempty"`
	// MIGSlices are the GPU's MIG devices, ascending by placement.
	// +optional
	// +listType=atomic
	MIGSlices []MIGSlice `json:"migSlices,omitempty"`
}

// MIGSlice is one MIG device: a GPU instance with its compute instance.
type MIGSlice struct {
	// UUID is the MIG device's UUID: "MIG-...".
	UUID string `json:"uuid"`
	// Profile is the canonical profile name: "1g.10gb", "1g.10gb+me",
	// "1c.3g.40gb".
	Profile string `json:"profile"`
	// GPUInstanceID and ComputeInstanceID are NVML's IDs within the GPU.
	GPUInstanceID     int32 `json:"gpuInstanceID"`
	ComputeInstanceID int32 `json:"computeInstanceID"`
	// Placement is where the GPU instance sits in the GPU's memory slices.
	Placement Placement `json:"placement"`
	// MemoryMiB is the slice's memory in MiB.
	MemoryMiB int64 `json:"memoryMiB"`
	// Multiprocessors is the compute instance's SM count.
	// +optional
	Multiprocessors int32 `json:"multiprocessors,omitempty"`
	// Health is the slice's health (its GPU's).
	Health Health `json:"health"`
	// +optional
	HealthReason string `json:"healthReason,omitempty"`
	// Sharing is how the slice is advertised; unset when it is not
	// advertised (MIG strategy none).
	// +optional
	Sharing *Sharing `json:"sharing,omitempty"`
}

// Placement is a GPU instance's position: Size memory slices from Start.
type Placement struct {
	// +kubebuilder:validation:Minimum=0
	Start int32 `json:"start"`
	// +kubebuilder:validation:Minimum=1
	Size int32 `json:"size"`
}

// FailedGPU is a GPU the agent could not read.
type FailedGPU struct {
	Index int32 `json:"index"`
	// UUID is empty when the UUID itself could not be read.
	// +optional
	UUID string `json:"uuid,omitempty"`
	// Reason is the error in words.
	Reason string `json:"reason"`
}

// Allocation is the devices of one resource held by one container.
type Allocation struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// PodUID is set when the agent knows it (the PodResources API does not
	// report it).
	// +optional
	PodUID    types.UID `json:"podUID,omitempty"`
	Container string    `json:"container"`
	// Resource is the extended resource: nvidia.com/gpu, nvidia.com/mig-1g.10gb.
	Resource string `json:"resource"`
	// DeviceIDs are the device IDs the kubelet allocated, as advertised: a
	// GPU or MIG UUID, or "<uuid>::<n>" for share unit n of a time-sliced
	// device.
	// +listType=atomic
	DeviceIDs []string `json:"deviceIDs"`
}

// Layout is the state of the node's MIG layout, from the node labels the
// layout reconciler keeps.
type Layout struct {
	// Config is the requested layout (nvidia.com/mig.config); empty when
	// the node has none.
	// +optional
	Config string `json:"config,omitempty"`
	// State is nvidia.com/mig.config.state: pending, rebooting, success or
	// failed; empty before the first layout.
	// +optional
	State string `json:"state,omitempty"`
	// LastChangeTime is when the agent saw Config or State change.
	// +optional
	LastChangeTime *metav1.Time `json:"lastChangeTime,omitempty"`
}

// Summary holds totals derived from the rest of the status.
type Summary struct {
	// GPUs is the number of physical GPUs (readable or not).
	GPUs int32 `json:"gpus"`
	// Product lists the distinct products, comma-separated, ascending.
	// +optional
	Product string `json:"product,omitempty"`
	// Devices is the number of schedulable devices: whole GPUs advertised
	// whole plus MIG slices advertised.
	Devices int32 `json:"devices"`
	// AllocatedDevices is how many of Devices at least one container holds
	// (a shared device with any unit held counts).
	AllocatedDevices int32 `json:"allocatedDevices"`
	// Allocation is "AllocatedDevices/Devices", for the table.
	Allocation string `json:"allocation"`
	// UnhealthyGPUs counts unhealthy and unreadable GPUs.
	UnhealthyGPUs int32 `json:"unhealthyGPUs"`
}
