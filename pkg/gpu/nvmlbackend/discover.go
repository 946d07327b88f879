package nvmlbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Discover reads every GPU, its MIG devices and the pairwise topology. A GPU
// that cannot be read (lost, timing out) is listed in Machine.Failed with the
// reason and left out of Devices and Topology; only system-level failures
// return an error.
func (b *Backend) Discover(ctx context.Context) (*gpu.Machine, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	m := &gpu.Machine{Backend: b.name}
	var err error
	if m.Versions, err = b.versions(); err != nil {
		return nil, err
	}
	count, ret := b.lib.DeviceGetCount()
	if err := toError(ret); err != nil {
		return nil, fmt.Errorf("counting gpus: %w", err)
	}
	handles := make([]nvml.Device, 0, count)
	for i := range count {
		if err := ctxErr(ctx); err != nil {
			return nil, err
		}
		d, dev, err := b.readDevice(i)
		if err != nil {
			m.Failed = append(m.Failed, gpu.DeviceFailure{Index: i, UUID: dev.UUID, Err: err})
			continue
		}
		m.Devices = append(m.Devices, dev)
		handles = append(handles, d)
	}
	topo, failures := b.topology(m.Devices, handles)
	m.Topology = topo
	m.Failed = append(m.Failed, failures...)
	return m, nil
}

func (b *Backend) versions() (gpu.Versions, error) {
	var v gpu.Versions
	var ret nvml.Return
	if v.Driver, ret = b.lib.SystemGetDriverVersion(); ret != nvml.SUCCESS {
		return v, fmt.Errorf("reading driver version: %w", toError(ret))
	}
	if v.NVML, ret = b.lib.SystemGetNVMLVersion(); ret != nvml.SUCCESS {
		return v, fmt.Errorf("reading nvml version: %w", toError(ret))
	}
	cuda, ret := b.lib.SystemGetCudaDriverVersion()
	if ret != nvml.SUCCESS {
		return v, fmt.Errorf("reading cuda driver version: %w", toError(ret))
	}
	v.CUDADriver = fmt.Sprintf("%d.%d", cuda/1000, cuda%1000/10)
	return v, nil
}

// readDevice reads one physical GPU and its MIG devices.
func (b *Backend) readDevice(index int) (nvml.Device, gpu.Device, error) {
	dev := gpu.Device{Index: index, NUMANode: -1, Minor: -1}
	d, err := b.device(index)
	if err != nil {
		return nil, dev, err
	}
	fail := func(what string, ret nvml.Return) error {
		name := dev.UUID
		if name == "" {
			name = "?"
		}
		return fmt.Errorf("reading %s of gpu %d (%s): %w", what, index, name, toError(ret))
	}
	var ret nvml.Return
	if dev.UUID, ret = d.GetUUID(); ret != nvml.SUCCESS {
		return nil, dev, fail("uuid", ret)
	}
	if dev.Name, ret = d.GetName(); ret != nvml.SUCCESS {
		return nil, dev, fail("name", ret)
	}
	dev.Product = gpu.ProductName(dev.Name)
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return nil, dev, fail("memory info", ret)
	}
	dev.MemoryMiB = mem.Total / (1 << 20)
	major, minor, ret := d.GetCudaComputeCapability()
	if ret != nvml.SUCCESS {
		return nil, dev, fail("compute capability", ret)
	}
	dev.ComputeCapability = gpu.ComputeCapability{Major: major, Minor: minor}
	arch, ret := d.GetArchitecture()
	switch ret {
	case nvml.SUCCESS:
		dev.Architecture = architecture(arch)
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		dev.Architecture = gpu.ArchUnknown
	default:
		return nil, dev, fail("architecture", ret)
	}
	pci, ret := d.GetPciInfo()
	if ret != nvml.SUCCESS {
		return nil, dev, fail("pci info", ret)
	}
	dev.PCIBusID = normalizeBusID(cString(pci.BusId[:]))
	dev.PCIDeviceID = pci.PciDeviceId
	numa, ret := d.GetNumaNodeId()
	switch ret {
	case nvml.SUCCESS:
		dev.NUMANode = numa
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		if n, err := b.numaFromSysfs(dev.PCIBusID); err == nil {
			dev.NUMANode = n
		}
	default:
		return nil, dev, fail("numa node", ret)
	}
	// The minor number only serves the device-open audit: a GPU whose minor
	// cannot be read is still a GPU (Minor stays -1).
	if minor, ret := d.GetMinorNumber(); ret == nvml.SUCCESS {
		dev.Minor = minor
	}
	current, pending, ret := d.GetMigMode()
	switch ret {
	case nvml.SUCCESS:
		dev.MIGCapable = true
		dev.MIGEnabled = current == nvml.DEVICE_MIG_ENABLE
		dev.MIGPendingEnabled = pending == nvml.DEVICE_MIG_ENABLE
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
	default:
		return nil, dev, fail("mig mode", ret)
	}
	if dev.MIGCapable {
		ps, err := b.migProfiles(d, index)
		if err != nil {
			return nil, dev, fmt.Errorf("reading mig profiles of gpu %d (%s): %w", index, dev.UUID, err)
		}
		dev.MIGProfiles = make([]gpu.MIGProfileInfo, len(ps))
		for i, p := range ps {
			dev.MIGProfiles[i] = p.MIGProfileInfo
		}
	}
	if dev.MIGEnabled {
		migs, err := b.readMIGDevices(d, index, mem.Total)
		if err != nil {
			return nil, dev, fmt.Errorf("reading mig devices of gpu %d (%s): %w", index, dev.UUID, err)
		}
		dev.MIGDevices = migs
	}
	return d, dev, nil
}

// readMIGDevices lists the MIG devices of a MIG-enabled GPU, ordered by placement.
func (b *Backend) readMIGDevices(d nvml.Device, parent int, totalMemBytes uint64) ([]gpu.MIGDevice, error) {
	handles, err := migHandles(d)
	if err != nil {
		return nil, err
	}
	out := make([]gpu.MIGDevice, 0, len(handles))
	for _, h := range handles {
		m, err := describeMIG(d, h, parent, totalMemBytes)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Placement.Start != out[j].Placement.Start {
			return out[i].Placement.Start < out[j].Placement.Start
		}
		return out[i].ComputeInstanceID < out[j].ComputeInstanceID
	})
	return out, nil
}

// migHandles returns the live MIG device handles of a GPU.
func migHandles(d nvml.Device) ([]nvml.Device, error) {
	n, ret := d.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("reading max mig device count: %w", toError(ret))
	}
	var out []nvml.Device
	for j := range n {
		h, ret := d.GetMigDeviceHandleByIndex(j)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue
		}
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("getting mig device handle %d: %w", j, toError(ret))
		}
		out = append(out, h)
	}
	return out, nil
}

func describeMIG(parent, h nvml.Device, parentIndex int, totalMemBytes uint64) (gpu.MIGDevice, error) {
	m := gpu.MIGDevice{Parent: parentIndex}
	var ret nvml.Return
	if m.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading mig device uuid: %w", toError(ret))
	}
	if m.GPUInstanceID, ret = h.GetGpuInstanceId(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading gpu instance id of %s: %w", m.UUID, toError(ret))
	}
	if m.ComputeInstanceID, ret = h.GetComputeInstanceId(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading compute instance id of %s: %w", m.UUID, toError(ret))
	}
	attrs, ret := h.GetAttributes()
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading attributes of %s: %w", m.UUID, toError(ret))
	}
	m.MemoryMiB = attrs.MemorySizeMB
	m.MultiprocessorCount = int(attrs.MultiprocessorCount)
	m.GPUSlices, m.ComputeSlices = int(attrs.GpuInstanceSliceCount), int(attrs.ComputeInstanceSliceCount)
	m.Engines = gpu.MIGEngines{Copy: int(attrs.SharedCopyEngineCount), Decoder: int(attrs.SharedDecoderCount),
		Encoder: int(attrs.SharedEncoderCount), JPEG: int(attrs.SharedJpegCount), OFA: int(attrs.SharedOfaCount)}
	gi, ret := parent.GetGpuInstanceById(m.GPUInstanceID)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("getting gpu instance %d of %s: %w", m.GPUInstanceID, m.UUID, toError(ret))
	}
	giInfo, ret := gi.GetInfo()
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading gpu instance %d: %w", m.GPUInstanceID, toError(ret))
	}
	m.Placement = gpu.Placement{Start: int(giInfo.Placement.Start), Size: int(giInfo.Placement.Size)}
	ci, ret := gi.GetComputeInstanceById(m.ComputeInstanceID)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("getting compute instance %d of gpu instance %d: %w", m.ComputeInstanceID, m.GPUInstanceID, toError(ret))
	}
	ciInfo, ret := ci.GetInfo()
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading compute instance %d: %w", m.ComputeInstanceID, toError(ret))
	}
	giProfile, ret := parent.GetGpuInstanceProfileInfo(int(giInfo.ProfileId))
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading gpu instance profile %d: %w", giInfo.ProfileId, toError(ret))
	}
	name, err := profileName(int(giInfo.ProfileId), int(ciInfo.ProfileId), giProfile.MemorySizeMB, totalMemBytes)
	if err != nil {
		return m, fmt.Errorf("naming profile of %s: %w", m.UUID, err)
	}
	m.Profile = name
	return m, nil
}

// topology fills the pairwise link matrix of the devices read.
func (b *Backend) topology(devs []gpu.Device, handles []nvml.Device) (gpu.Topology, []gpu.DeviceFailure) {
	t := gpu.NewTopology(len(devs))
	var failures []gpu.DeviceFailure
	byBus := make(map[string]int, len(devs))
	for i, d := range devs {
		byBus[d.PCIBusID] = i
	}
	links := make([]nvlinkCounts, len(devs))
	for i, h := range handles {
		l, err := readNVLinks(h, byBus)
		if err != nil {
			failures = append(failures, gpu.DeviceFailure{Index: devs[i].Index, UUID: devs[i].UUID,
				Err: fmt.Errorf("reading nvlinks of gpu %d (%s): %w", devs[i].Index, devs[i].UUID, err)})
		}
		links[i] = l
	}
	for i := range devs {
		for j := i + 1; j < len(devs); j++ {
			var link gpu.Link
			level, ret := handles[i].GetTopologyCommonAncestor(handles[j])
			if ret == nvml.SUCCESS {
				link.PCIe = pciePath(level)
			} else {
				link.PCIe = gpu.PathUnknown
				if ret != nvml.ERROR_NOT_SUPPORTED {
					failures = append(failures, gpu.DeviceFailure{Index: devs[i].Index, UUID: devs[i].UUID,
						Err: fmt.Errorf("reading topology between gpu %d and %d: %w", devs[i].Index, devs[j].Index, toError(ret))})
				}
			}
			// Both ends normally count the same bridge links; if a link is
			// down on one side only, the side that still sees it wins.
			link.NVLinks = max(links[i].toGPU[j], links[j].toGPU[i])
			if links[i].toSwitch > 0 && links[j].toSwitch > 0 {
				link.NVSwitch = true
				link.NVLinks += min(links[i].toSwitch, links[j].toSwitch)
			}
			t.Set(i, j, link)
		}
	}
	return t, failures
}

type nvlinkCounts struct {
	toGPU    map[int]int
	toSwitch int
}

// readNVLinks counts a GPU's active NVLinks by peer GPU (position in devs) and
// those going into an NVSwitch fabric.
func readNVLinks(h nvml.Device, byBus map[string]int) (nvlinkCounts, error) {
	c := nvlinkCounts{toGPU: map[int]int{}}
	for link := range nvml.NVLINK_MAX_LINKS {
		state, ret := h.GetNvLinkState(link)
		if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT || ret == nvml.ERROR_FUNCTION_NOT_FOUND {
			break
		}
		if ret != nvml.SUCCESS {
			return c, fmt.Errorf("link %d state: %w", link, toError(ret))
		}
		if state != nvml.FEATURE_ENABLED {
			continue
		}
		kind, ret := h.GetNvLinkRemoteDeviceType(link)
		if ret == nvml.SUCCESS && kind == nvml.NVLINK_DEVICE_TYPE_SWITCH {
			c.toSwitch++
			continue
		}
		pci, ret := h.GetNvLinkRemotePciInfo(link)
		if ret != nvml.SUCCESS {
			return c, fmt.Errorf("link %d remote pci info: %w", link, toError(ret))
		}
		if peer, ok := byBus[normalizeBusID(cString(pci.BusId[:]))]; ok {
			c.toGPU[peer]++
		}
	}
	return c, nil
}

func pciePath(l nvml.GpuTopologyLevel) gpu.PCIePath {
	switch l {
	case nvml.TOPOLOGY_INTERNAL:
		return gpu.PathSame
	case nvml.TOPOLOGY_SINGLE:
		return gpu.PathSingleSwitch
	case nvml.TOPOLOGY_MULTIPLE:
		return gpu.PathMultiSwitch
	case nvml.TOPOLOGY_HOSTBRIDGE:
		return gpu.PathHostBridge
	case nvml.TOPOLOGY_NODE:
		return gpu.PathSameCPU
	case nvml.TOPOLOGY_SYSTEM:
		return gpu.PathCrossCPU
	default:
		return gpu.PathUnknown
	}
}

func architecture(a nvml.DeviceArchitecture) gpu.Architecture {
	switch a {
	case nvml.DEVICE_ARCH_KEPLER:
		return gpu.ArchKepler
	case nvml.DEVICE_ARCH_MAXWELL:
		return gpu.ArchMaxwell
	case nvml.DEVICE_ARCH_PASCAL:
		return gpu.ArchPascal
	case nvml.DEVICE_ARCH_VOLTA:
		return gpu.ArchVolta
	case nvml.DEVICE_ARCH_TURING:
		return gpu.ArchTuring
	case nvml.DEVICE_ARCH_AMPERE:
		return gpu.ArchAmpere
	case nvml.DEVICE_ARCH_ADA:
		return gpu.ArchAda
	case nvml.DEVICE_ARCH_HOPPER:
		return gpu.ArchHopper
	case nvml.DEVICE_ARCH_BLACKWELL:
		return gpu.ArchBlackwell
	default:
		return gpu.ArchUnknown
	}
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	buf := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		buf = append(buf, byte(c))
	}
	return string(buf)
}

// normalizeBusID turns NVML's "00000000:1B:00.0" into the sysfs and
// Kubernetes form "0000:1b:00.0".
func normalizeBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if domain, rest, ok := strings.Cut(id, ":"); ok && len(domain) > 4 {
		id = domain[len(domain)-4:] + ":" + rest
	}
	return id
}

// readSysfsNUMANode reads the NUMA node of a PCI device from sysfs, for drivers
// whose NVML lacks nvmlDeviceGetNumaNodeId.
func readSysfsNUMANode(busID string) (int, error) {
	raw, err := os.ReadFile(filepath.Join("/sys/bus/pci/devices", busID, "numa_node"))
	if err != nil {
		return -1, fmt.Errorf("reading numa node of %s: %w", busID, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return -1, fmt.Errorf("parsing numa node of %s: %w", busID, err)
	}
	if n < 0 {
		return -1, errors.New("no numa affinity")
	}
	return n, nil
}
