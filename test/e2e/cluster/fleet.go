package cluster

// Node labels the fleet and scenario use.
const (
	LabelMIGConfig      = "nvidia.com/mig.config"
	LabelMIGState       = "nvidia.com/mig.config.state"
	LabelDevicePlugin   = "nvidia.com/device-plugin.config"
	LabelProduct        = "nvidia.com/gpu.product"
	SchedulerName       = "tessera-gpu-scheduler"
	AnnotationDevices   = "gpu.tessera.dev/devices"
	AnnotationInterconn = "gpu.tessera.dev/interconnect"
)

// MIG layouts of the demo, added to the GPU Operator's defaults that
// manifests/base ships: a DGX whose GPUs 0-3 stay whole and 4-7 are cut into
// 1g.10gb slices, and the layout it is switched to mid-way (GPUs 6-7 become
// 3g.40gb slices for larger models).
const (
	LayoutMixed   = "tessera-demo-mixed"
	LayoutMixed3g = "tessera-demo-mixed-3g"
)

const demoMIGLayouts = `
  # Added by the Tessera demo (test/e2e/cluster).
  ` + LayoutMixed + `:
    - devices: [0, 1, 2, 3]
      mig-enabled: false
    - devices: [4, 5, 6, 7]
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
  ` + LayoutMixed3g + `:
    - devices: [0, 1, 2, 3]
      mig-enabled: false
    - devices: [4, 5]
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
    - devices: [6, 7]
      mig-enabled: true
      mig-devices:
        "3g.40gb": 2
`

// SharedConfig is the device-plugin config of the time-shared node: every
// GPU in quarters under nvidia.com/gpu.shared.
const SharedConfig = "tessera-demo-shared-4"

const demoSharedConfig = `version: v1
flags:
  migStrategy: mixed
sharing:
  timeSlicing:
    resources:
      - name: nvidia.com/gpu
        rename: nvidia.com/gpu.shared
        replicas: 4
`

// NodeSpec is one simulated node of the fleet.
type NodeSpec struct {
	Name string
	// Kind says what the node is, for people.
	Kind string
	// Machine names a built-in simulated machine (pkg/gpu/sim/machines,
	// docs/machines.md); the node gets a copy under its own name, which
	// seeds the GPU UUIDs, so that no two nodes share a UUID.
	Machine string
	// Labels are set when the node registers (layout and sharing choices).
	Labels      map[string]string
	CPU, Memory string
}

// Fleet is the demo's fleet: two DGX H100 (one with MIG), two 4xL40S PCIe
// servers on two NUMA nodes, a time-shared node and an RTX 4090 workstation.
func Fleet() []NodeSpec {
	return []NodeSpec{
		{Name: "dgx-h100-1", Kind: "DGX H100, 8 GPUs on NVSwitch, whole", Machine: "dgx-h100", CPU: "224", Memory: "2Ti"},
		{Name: "dgx-h100-2", Kind: "DGX H100, MIG mixed (GPUs 0-3 whole, 4-7 MIG)", Machine: "dgx-h100", CPU: "224", Memory: "2Ti",
			Labels: map[string]string{LabelMIGConfig: LayoutMixed}},
		{Name: "l40s-1", Kind: "4x L40S PCIe, two NUMA nodes", Machine: "pcie-4xl40s", CPU: "64", Memory: "512Gi"},
		{Name: "l40s-2", Kind: "4x L40S PCIe, two NUMA nodes", Machine: "pcie-4xl40s", CPU: "64", Memory: "512Gi"},
		{Name: "ts-1", Kind: "4x L40S time-shared in quarters (nvidia.com/gpu.shared)", Machine: "pcie-4xl40s", CPU: "64", Memory: "512Gi",
			Labels: map[string]string{LabelDevicePlugin: SharedConfig}},
		{Name: "ws-1", Kind: "workstation, 2x RTX 4090", Machine: "ws-2xrtx4090", CPU: "32", Memory: "128Gi"},
	}
}
