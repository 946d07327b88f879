package sim

import (
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// device is a simulated physical GPU. It embeds go-nvml's stateful mock device
// (whose UUID, PCI bus ID and index it keeps consistent) so that it implements
// all of nvml.Device; the calls Tessera makes are methods of device and shadow
// the mock's, and the mock's remaining calls answer ERROR_NOT_SUPPORTED.
type device struct {
	*server.Device
	m     *Machine
	index int
	model *model
	uuid  string
	busID string // canonical: "00000000:18:00.0"
	pci   nvml.PciInfo
	numa  int

	// migCache holds migHandles' result until the next MIG change.
	migCache   []*migDevice
	migCacheOK bool

	// Topology; group indices are -1 when the GPU is in no such group.
	pcieSwitch, pcieUpstream, hostBridge int
	nvswitch                             bool
	bridgePeer                           *device

	// State below is guarded by m.mu.
	lost                bool
	resetRequiredForMIG bool
	migMode, migPending int
	gis                 map[uint32]*gpuInstance
	load                Load
	meter               meter
	ecc                 eccState
	pcieReplays         uint64
	eventSets           map[*eventSet]uint64 // registered event types per set
}

var _ nvml.Device = (*device)(nil)

func newDevice(m *Machine, index int, md *model, sd *server.Device, now time.Time) *device {
	d := &device{
		Device:       sd,
		m:            m,
		index:        index,
		model:        md,
		uuid:         gpuUUID(m.name, index),
		pcieSwitch:   -1,
		pcieUpstream: -1,
		hostBridge:   -1,
		gis:          map[uint32]*gpuInstance{},
		meter:        meter{last: now},
		eventSets:    map[*eventSet]uint64{},
	}
	var ok bool
	if len(m.profile.PCIBusIDs) > index {
		d.busID, ok = canonicalBusID(m.profile.PCIBusIDs[index])
	}
	if !ok {
		d.busID = fmt.Sprintf("%08X:%02X:00.0", index/16, 0x01+(index%16)*0x10)
	}
	d.pci = pciInfo(d.busID, md.pciDeviceID, md.pciSubsystemID)
	if len(m.profile.Topology.NUMA) > index {
		d.numa = m.profile.Topology.NUMA[index]
	}
	// Keep the mock's own view consistent with the simulation.
	sd.UUID = d.uuid
	sd.PciBusID = d.busID
	sd.Index = index
	sd.Minor = index
	stubMock(m, &sd.Device, index, "")
	return d
}

// pciInfo returns NVML's PciInfo for a canonical bus ID.
func pciInfo(busID string, deviceID, subsystemID uint32) nvml.PciInfo {
	var dom, bus, dev, fn uint32
	_, _ = fmt.Sscanf(busID, "%08X:%02X:%02X.%X", &dom, &bus, &dev, &fn)
	p := nvml.PciInfo{Domain: dom, Bus: bus, Device: dev, PciDeviceId: deviceID, PciSubSystemId: subsystemID}
	putString(p.BusId[:], busID)
	putString(p.BusIdLegacy[:], fmt.Sprintf("%04X:%02X:%02X.%X", dom, bus, dev, fn))
	return p
}

func putString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

// buildTopology resolves the profile's topology groups onto the devices.
func (m *Machine) buildTopology() {
	t := m.profile.Topology
	assign := func(groups [][]int, set func(d *device, g int)) {
		for g, members := range groups {
			for _, i := range members {
				set(m.devs[i], g)
			}
		}
	}
	assign(t.PCIeSwitches, func(d *device, g int) { d.pcieSwitch = g })
	assign(t.PCIeUpstream, func(d *device, g int) { d.pcieUpstream = g })
	assign(t.HostBridges, func(d *device, g int) { d.hostBridge = g })
	for _, b := range t.NVLinkBridges {
		m.devs[b[0]].bridgePeer, m.devs[b[1]].bridgePeer = m.devs[b[1]], m.devs[b[0]]
	}
	if !t.NVSwitch {
		return
	}
	n, switchID := 0, uint32(0x1AF110DE) // NVSwitch gen 2 (Ampere)
	used := map[uint32]bool{}
	for _, d := range m.devs {
		d.nvswitch = true
		n = max(n, d.model.nvswitches)
		if d.model.arch >= nvml.DEVICE_ARCH_HOPPER {
			switchID = 0x22A310DE // NVSwitch gen 3
		}
		if d.pci.Domain == 0 {
			used[d.pci.Bus] = true
		}
	}
	for bus := uint32(0xC4); len(m.switches) < n && bus <= 0xFF; bus++ {
		if !used[bus] {
			m.switches = append(m.switches, pciInfo(fmt.Sprintf("%08X:%02X:00.0", 0, bus), switchID, 0))
		}
	}
}

// begin locks the machine and runs the call check; callers defer the unlock.
func (d *device) begin(call string) (nvml.Return, *sync.Mutex) {
	d.m.mu.Lock()
	return d.m.enter(d.index, call), &d.m.mu
}

// GetIndex returns the NVML index.
func (d *device) GetIndex() (int, nvml.Return) {
	r, unlock := d.begin("GetIndex")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.index, nvml.SUCCESS
}

// GetMinorNumber returns the /dev/nvidiaN minor number.
func (d *device) GetMinorNumber() (int, nvml.Return) {
	r, unlock := d.begin("GetMinorNumber")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.index, nvml.SUCCESS
}

// GetUUID returns "GPU-<uuid>", stable for the machine name and index.
func (d *device) GetUUID() (string, nvml.Return) {
	r, unlock := d.begin("GetUUID")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	return d.uuid, nvml.SUCCESS
}

// GetName returns the marketing name ("NVIDIA H100 80GB HBM3").
func (d *device) GetName() (string, nvml.Return) {
	r, unlock := d.begin("GetName")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	return d.model.name, nvml.SUCCESS
}

// GetBrand returns the brand.
func (d *device) GetBrand() (nvml.BrandType, nvml.Return) {
	r, unlock := d.begin("GetBrand")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.model.brand, nvml.SUCCESS
}

// GetArchitecture returns the architecture.
func (d *device) GetArchitecture() (nvml.DeviceArchitecture, nvml.Return) {
	r, unlock := d.begin("GetArchitecture")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.model.arch, nvml.SUCCESS
}

// GetCudaComputeCapability returns the compute capability.
func (d *device) GetCudaComputeCapability() (int, int, nvml.Return) {
	r, unlock := d.begin("GetCudaComputeCapability")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	return d.model.ccMajor, d.model.ccMinor, nvml.SUCCESS
}

// GetPciInfo returns the PCI address and IDs.
func (d *device) GetPciInfo() (nvml.PciInfo, nvml.Return) {
	r, unlock := d.begin("GetPciInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.PciInfo{}, r
	}
	return d.pci, nvml.SUCCESS
}

// GetNumaNodeId returns the GPU's NUMA node.
func (d *device) GetNumaNodeId() (int, nvml.Return) {
	r, unlock := d.begin("GetNumaNodeId")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.numa, nvml.SUCCESS
}

// GetAttributes returns the whole GPU's attributes.
func (d *device) GetAttributes() (nvml.DeviceAttributes, nvml.Return) {
	r, unlock := d.begin("GetAttributes")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.DeviceAttributes{}, r
	}
	a := nvml.DeviceAttributes{MultiprocessorCount: d.model.smCount, MemorySizeMB: d.model.memoryMiB}
	if d.model.mig != nil {
		a.GpuInstanceSliceCount = uint32(d.model.mig.computeSlices)
		a.ComputeInstanceSliceCount = uint32(d.model.mig.computeSlices)
	}
	return a, nvml.SUCCESS
}

// GetTopologyCommonAncestor returns the closest common PCIe ancestor.
func (d *device) GetTopologyCommonAncestor(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
	r, unlock := d.begin("GetTopologyCommonAncestor")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	o, ok := other.(*device)
	if !ok || o.m != d.m {
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	if o.lost {
		return 0, nvml.ERROR_GPU_IS_LOST
	}
	return commonAncestor(d, o), nvml.SUCCESS
}

func commonAncestor(a, b *device) nvml.GpuTopologyLevel {
	switch {
	case a == b:
		return nvml.TOPOLOGY_INTERNAL
	case a.pcieSwitch >= 0 && a.pcieSwitch == b.pcieSwitch:
		return nvml.TOPOLOGY_SINGLE
	case a.pcieUpstream >= 0 && a.pcieUpstream == b.pcieUpstream:
		return nvml.TOPOLOGY_MULTIPLE
	case a.hostBridge >= 0 && a.hostBridge == b.hostBridge:
		return nvml.TOPOLOGY_HOSTBRIDGE
	case a.numa == b.numa:
		return nvml.TOPOLOGY_NODE
	default:
		return nvml.TOPOLOGY_SYSTEM
	}
}

// checkLink validates an NVLink index: ERROR_NOT_SUPPORTED without NVLink,
// ERROR_INVALID_ARGUMENT beyond the GPU's links. It reports whether the link
// is active.
func (d *device) checkLink(link int) (bool, nvml.Return) {
	if d.model.nvlinks == 0 {
		return false, nvml.ERROR_NOT_SUPPORTED
	}
	if link < 0 || link >= d.model.nvlinks {
		return false, nvml.ERROR_INVALID_ARGUMENT
	}
	return d.nvswitch || d.bridgePeer != nil, nvml.SUCCESS
}

// GetNvLinkState reports whether an NVLink link is active.
func (d *device) GetNvLinkState(link int) (nvml.EnableState, nvml.Return) {
	r, unlock := d.begin("GetNvLinkState")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	active, r := d.checkLink(link)
	if r != nvml.SUCCESS {
		return 0, r
	}
	if active {
		return nvml.FEATURE_ENABLED, nvml.SUCCESS
	}
	return nvml.FEATURE_DISABLED, nvml.SUCCESS
}

// GetNvLinkRemoteDeviceType returns what an active link reaches. An inactive
// link answers ERROR_NOT_SUPPORTED.
func (d *device) GetNvLinkRemoteDeviceType(link int) (nvml.IntNvLinkDeviceType, nvml.Return) {
	r, unlock := d.begin("GetNvLinkRemoteDeviceType")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.NVLINK_DEVICE_TYPE_UNKNOWN, r
	}
	active, r := d.checkLink(link)
	switch {
	case r != nvml.SUCCESS:
		return nvml.NVLINK_DEVICE_TYPE_UNKNOWN, r
	case !active:
		return nvml.NVLINK_DEVICE_TYPE_UNKNOWN, nvml.ERROR_NOT_SUPPORTED
	case d.nvswitch:
		return nvml.NVLINK_DEVICE_TYPE_SWITCH, nvml.SUCCESS
	default:
		return nvml.NVLINK_DEVICE_TYPE_GPU, nvml.SUCCESS
	}
}

// GetNvLinkRemotePciInfo returns the PCI identity of what an active link
// reaches: an NVSwitch, or the bridged peer GPU.
func (d *device) GetNvLinkRemotePciInfo(link int) (nvml.PciInfo, nvml.Return) {
	r, unlock := d.begin("GetNvLinkRemotePciInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.PciInfo{}, r
	}
	active, r := d.checkLink(link)
	switch {
	case r != nvml.SUCCESS:
		return nvml.PciInfo{}, r
	case !active:
		return nvml.PciInfo{}, nvml.ERROR_NOT_SUPPORTED
	case d.nvswitch:
		return d.m.switches[link%len(d.m.switches)], nvml.SUCCESS
	default:
		return d.bridgePeer.pci, nvml.SUCCESS
	}
}

// GetPowerManagementLimit returns the power limit in mW (the TDP).
func (d *device) GetPowerManagementLimit() (uint32, nvml.Return) {
	return d.powerLimit("GetPowerManagementLimit")
}

// GetPowerManagementDefaultLimit returns the default power limit in mW.
func (d *device) GetPowerManagementDefaultLimit() (uint32, nvml.Return) {
	return d.powerLimit("GetPowerManagementDefaultLimit")
}

// GetEnforcedPowerLimit returns the enforced power limit in mW.
func (d *device) GetEnforcedPowerLimit() (uint32, nvml.Return) {
	return d.powerLimit("GetEnforcedPowerLimit")
}

func (d *device) powerLimit(call string) (uint32, nvml.Return) {
	r, unlock := d.begin(call)
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return uint32(d.model.tdpW * 1000), nvml.SUCCESS
}

// GetPersistenceMode reports persistence mode, enabled as on servers.
func (d *device) GetPersistenceMode() (nvml.EnableState, nvml.Return) {
	r, unlock := d.begin("GetPersistenceMode")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return nvml.FEATURE_ENABLED, nvml.SUCCESS
}

// GetComputeMode returns the compute mode (default).
func (d *device) GetComputeMode() (nvml.ComputeMode, nvml.Return) {
	r, unlock := d.begin("GetComputeMode")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return nvml.COMPUTEMODE_DEFAULT, nvml.SUCCESS
}

// GetEccMode returns the current and pending ECC mode; ERROR_NOT_SUPPORTED
// on GPUs without ECC.
func (d *device) GetEccMode() (nvml.EnableState, nvml.EnableState, nvml.Return) {
	r, unlock := d.begin("GetEccMode")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	if !d.model.ecc {
		return 0, 0, nvml.ERROR_NOT_SUPPORTED
	}
	return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
}

// reset performs a GPU reset. The caller holds m.mu.
func (d *device) reset(now time.Time) {
	d.advance(now)
	d.lost = false
	for _, gi := range d.gis {
		gi.invalidate()
	}
	clear(d.gis)
	d.migChanged()
	d.migMode = d.migPending
	d.load = Load{}
	d.ecc.reset()
}
