// Package sim provides simulated GPU machines that present a real nvml.Interface
// (github.com/NVIDIA/go-nvml), so that Tessera's NVML backend runs unchanged on
// libnvidia-ml and on a simulated DGX, PCIe server or workstation.
//
// It owns the machine descriptions (a YAML format and the built-in machines in
// machines/*.yaml), the catalogue of GPU models, and a stateful simulation of
// the NVML calls Tessera makes: device identity, PCI and NUMA placement, the
// PCIe/NVLink/NVSwitch topology, MIG modes and instances with real placement
// rules, telemetry that follows an injected load, ECC/XID events, GPM
// (Hopper and newer), and fault injection (any call, any GPU, GPU loss and
// recovery). Return codes follow the NVML documentation in nvml.h, not the
// go-nvml mocks the simulation is built on.
//
// It must not touch real hardware, read flags or environment variables, or
// import Tessera's machine model (package gpu): it is a library that answers
// NVML calls, and the backend that turns those answers into a gpu.Machine is
// tested against it.
//
// # Machine descriptions
//
// A machine is described in YAML (unknown fields are rejected):
//
//	name: my-node                  # required; also seeds the GPU UUIDs
//	driverVersion: "550.54.15"     # optional; default from the GPU models
//	cudaDriverVersion: "12.4"      # optional; default from the GPU models
//	gpus:                          # GPU groups, enumerated in order
//	  - model: h100-sxm5-80gb      # catalogue key, see below
//	    count: 8
//	pciBusIds: ["0000:18:00.0"]    # optional, one per GPU; default derived from the index
//	topology:
//	  nvswitch: true               # all GPUs reach an NVSwitch fabric with all their NVLinks
//	  nvlinkBridges: [[0,1],[2,3]] # or point-to-point bridges (all of the model's links per pair)
//	  pcieSwitches: [[0,1],[2,3]]  # GPUs under one PCIe switch      -> TOPOLOGY_SINGLE
//	  pcieUpstream: [[0,1,2,3]]    # under a common upstream switch  -> TOPOLOGY_MULTIPLE
//	  hostBridges: [[0,1]]         # behind one CPU host bridge      -> TOPOLOGY_HOSTBRIDGE
//	  numa: [0,0,1,1]              # NUMA node per GPU: same node    -> TOPOLOGY_NODE, else TOPOLOGY_SYSTEM
//
// Models: a100-sxm4-40gb, a100-sxm4-80gb, a100-pcie-80gb, h100-sxm5-80gb,
// h200-sxm5-141gb, b200-sxm-180gb, l40s, rtx-4090. Built-in machines:
// dgx-a100, dgx-h100, dgx-h200, dgx-b200, pcie-4xl40s, pcie-8xa100-80gb,
// ws-2xrtx4090. testdata/example-fleet.yaml is a commented example.
//
// # Behaviour worth knowing
//
//   - Every call before Init (or after the last Shutdown) returns
//     ERROR_UNINITIALIZED, as libnvidia-ml does.
//   - Calls counts calls by method name. Device and MIG-handle methods are
//     counted by their Device method name ("GetTemperature"), whether called
//     on the handle or through the library form (DeviceGetTemperature(d));
//     GPU-instance, compute-instance, event-set and GPM-sample methods by the
//     library name ("GpuInstanceDestroy", "EventSetWait", "GpmSampleGet").
//     Fault rules match the same names.
//   - Calls the simulation does not model return ERROR_NOT_SUPPORTED (never a
//     panic). The go-nvml "…V()" helpers (GetGpuInstanceProfileInfoV,
//     GpmQueryDeviceSupportV, …) return concrete structs that call into
//     libnvidia-ml and cannot be simulated; use the plain forms.
//   - In MIG mode GetUtilizationRates returns ERROR_NOT_SUPPORTED and
//     GetRemappedRows does too while GPU instances exist, as on real GPUs.
//   - GetMaxMigDeviceCount is 0 (SUCCESS) unless MIG is enabled, as nvml.h
//     documents; it is 7 on an enabled A100/H100/H200/B200.
//   - Processes carry their own utilisation (Process.SMUtil, MemUtil),
//     which GetProcessUtilization samples outside MIG mode, and a cgroup
//     path, which Machine.ReadCgroup serves as /proc/<pid>/cgroup would, so
//     that per-pod usage resolves PIDs to pods without real processes.
//   - A GPU reset (RecoverGPU, ResetGPU) destroys all MIG instances, ends all
//     processes, applies a pending MIG mode and clears volatile ECC counters.
package sim
