package sim

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
)

// model is one GPU model of the catalogue. Values are those real GPUs report
// through NVML; where go-nvml's mock configuration differs (names, memory
// sizes, placements, PCI device IDs) the real value wins.
type model struct {
	key  string
	name string // NVML name; Tessera derives the GFD product label from it

	arch             nvml.DeviceArchitecture
	brand            nvml.BrandType
	ccMajor, ccMinor int
	memoryMiB        uint64
	pciDeviceID      uint32 // device<<16 | vendor
	pciSubsystemID   uint32
	smCount          uint32

	tdpW, idleW               float64
	smClockMax, smClockIdle   uint32
	memClockMax, memClockIdle uint32

	nvlinks    int // NVLink links per GPU; 0 = no NVLink
	nvswitches int // NVSwitch chips a GPU's links spread over in an NVSwitch system
	ecc        bool
	gpm        bool

	// defaultDriver and defaultCUDA are the oldest driver that supports the model.
	defaultDriver, defaultCUDA string

	// mig is nil for GPUs without MIG.
	mig *migTables
}

// migTables are a MIG-capable model's GPU- and compute-instance profiles.
type migTables struct {
	gi           map[int]nvml.GpuInstanceProfileInfo
	giPlacements map[int][]nvml.GpuInstancePlacement
	ci           map[int]map[int]nvml.ComputeInstanceProfileInfo
	// memorySlices is the number of memory slices placements address (8);
	// computeSlices is the number of compute slices (7).
	memorySlices, computeSlices int
}

// maxGPUInstances is the most GPU instances any MIG GPU of the catalogue holds.
const maxGPUInstances = 7

var catalogue = buildCatalogue()

// modelKeys returns the catalogue keys, sorted.
func modelKeys() []string { return slices.Sorted(maps.Keys(catalogue)) }

func buildCatalogue() map[string]*model {
	a100 := func(key, name string, cfg gpus.Config, memMiB uint64, devID, subsys uint32, tdp, idle float64, memClock uint32) *model {
		return &model{
			key: key, name: name, arch: nvml.DEVICE_ARCH_AMPERE, brand: nvml.BRAND_NVIDIA,
			ccMajor: 8, ccMinor: 0, memoryMiB: memMiB, pciDeviceID: devID, pciSubsystemID: subsys, smCount: 108,
			tdpW: tdp, idleW: idle, smClockMax: 1410, smClockIdle: 210, memClockMax: memClock, memClockIdle: memClock,
			nvlinks: 12, nvswitches: 6, ecc: true, gpm: false,
			defaultDriver: "550.54.15", defaultCUDA: "12.4",
			mig: newMIGTables(cfg.MIGProfiles, nil),
		}
	}
	ms := []*model{
		a100("a100-sxm4-40gb", "NVIDIA A100-SXM4-40GB", gpus.A100_SXM4_40GB, 40960, 0x20B010DE, 0x134F10DE, 400, 55, 1215),
		a100("a100-sxm4-80gb", "NVIDIA A100-SXM4-80GB", gpus.A100_SXM4_80GB, 81920, 0x20B210DE, 0x147F10DE, 400, 55, 1593),
		a100("a100-pcie-80gb", "NVIDIA A100 80GB PCIe", gpus.A100_PCIE_80GB, 81920, 0x20B510DE, 0x153310DE, 300, 40, 1512),
		{
			key: "h100-sxm5-80gb", name: "NVIDIA H100 80GB HBM3", arch: nvml.DEVICE_ARCH_HOPPER, brand: nvml.BRAND_NVIDIA,
			ccMajor: 9, ccMinor: 0, memoryMiB: 81559, pciDeviceID: 0x233010DE, pciSubsystemID: 0x16C110DE, smCount: 132,
			tdpW: 700, idleW: 70, smClockMax: 1980, smClockIdle: 345, memClockMax: 2619, memClockIdle: 2619,
			nvlinks: 18, nvswitches: 4, ecc: true, gpm: true,
			defaultDriver: "550.54.15", defaultCUDA: "12.4",
			// MIG sizes as an H100 80GB reports them (1g.10gb = 9.75 GiB ...).
			mig: newMIGTables(gpus.H100_SXM5_80GB.MIGProfiles, map[int]uint64{
				nvml.GPU_INSTANCE_PROFILE_1_SLICE: 9984, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1: 9984,
				nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2: 20096, nvml.GPU_INSTANCE_PROFILE_2_SLICE: 20096,
				nvml.GPU_INSTANCE_PROFILE_3_SLICE: 40448, nvml.GPU_INSTANCE_PROFILE_4_SLICE: 40448,
				nvml.GPU_INSTANCE_PROFILE_7_SLICE: 81152,
			}),
		},
		{
			key: "h200-sxm5-141gb", name: "NVIDIA H200", arch: nvml.DEVICE_ARCH_HOPPER, brand: nvml.BRAND_NVIDIA,
			ccMajor: 9, ccMinor: 0, memoryMiB: 143771, pciDeviceID: 0x233510DE, pciSubsystemID: 0x18BE10DE, smCount: 132,
			tdpW: 700, idleW: 75, smClockMax: 1980, smClockIdle: 345, memClockMax: 3201, memClockIdle: 3201,
			nvlinks: 18, nvswitches: 4, ecc: true, gpm: true,
			defaultDriver: "550.54.15", defaultCUDA: "12.4",
			mig: newMIGTables(gpus.H200_SXM5_141GB.MIGProfiles, map[int]uint64{
				nvml.GPU_INSTANCE_PROFILE_1_SLICE: 17152, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1: 17152,
				nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2: 34560, nvml.GPU_INSTANCE_PROFILE_2_SLICE: 34560,
				nvml.GPU_INSTANCE_PROFILE_3_SLICE: 70144, nvml.GPU_INSTANCE_PROFILE_4_SLICE: 70144,
				nvml.GPU_INSTANCE_PROFILE_7_SLICE: 141312,
			}),
		},
		{
			key: "b200-sxm-180gb", name: "NVIDIA B200", arch: nvml.DEVICE_ARCH_BLACKWELL, brand: nvml.BRAND_NVIDIA,
			ccMajor: 10, ccMinor: 0, memoryMiB: 183359, pciDeviceID: 0x290110DE, pciSubsystemID: 0x199910DE, smCount: 148,
			tdpW: 1000, idleW: 140, smClockMax: 1965, smClockIdle: 120, memClockMax: 3996, memClockIdle: 3996,
			nvlinks: 18, nvswitches: 2, ecc: true, gpm: true,
			defaultDriver: "570.124.06", defaultCUDA: "12.8",
			mig: newMIGTables(gpus.B200_SXM5_180GB.MIGProfiles, map[int]uint64{
				nvml.GPU_INSTANCE_PROFILE_1_SLICE: 22528, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1: 22528,
				nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2: 45056, nvml.GPU_INSTANCE_PROFILE_2_SLICE: 45056,
				nvml.GPU_INSTANCE_PROFILE_3_SLICE: 90112, nvml.GPU_INSTANCE_PROFILE_4_SLICE: 90112,
				nvml.GPU_INSTANCE_PROFILE_7_SLICE: 178176,
			}),
		},
		{
			key: "l40s", name: "NVIDIA L40S", arch: nvml.DEVICE_ARCH_ADA, brand: nvml.BRAND_NVIDIA,
			ccMajor: 8, ccMinor: 9, memoryMiB: 46068, pciDeviceID: 0x26B910DE, pciSubsystemID: 0x185110DE, smCount: 142,
			tdpW: 350, idleW: 35, smClockMax: 2520, smClockIdle: 210, memClockMax: 9001, memClockIdle: 405,
			ecc: true, defaultDriver: "550.54.15", defaultCUDA: "12.4",
		},
		{
			key: "rtx-4090", name: "NVIDIA GeForce RTX 4090", arch: nvml.DEVICE_ARCH_ADA, brand: nvml.BRAND_GEFORCE,
			ccMajor: 8, ccMinor: 9, memoryMiB: 24564, pciDeviceID: 0x268410DE, pciSubsystemID: 0x16F310DE, smCount: 128,
			tdpW: 450, idleW: 20, smClockMax: 3105, smClockIdle: 210, memClockMax: 10501, memClockIdle: 405,
			defaultDriver: "550.54.15", defaultCUDA: "12.4",
		},
	}
	out := make(map[string]*model, len(ms))
	for _, m := range ms {
		out[m.key] = m
	}
	return out
}

// realPlacements are the GPU-instance placements every MIG GPU of the
// catalogue reports: 8 memory slices, instances aligned to their size. (The
// go-nvml mocks for H100/H200/B200 use 7 slices with sizes 3 and 7, which no
// real GPU reports.)
var realPlacements = map[int][]nvml.GpuInstancePlacement{
	nvml.GPU_INSTANCE_PROFILE_1_SLICE:      alignedPlacements(1, 7, 8),
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1: alignedPlacements(1, 7, 8),
	nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2: alignedPlacements(2, 8, 8),
	nvml.GPU_INSTANCE_PROFILE_2_SLICE:      alignedPlacements(2, 6, 8),
	nvml.GPU_INSTANCE_PROFILE_3_SLICE:      alignedPlacements(4, 8, 8),
	nvml.GPU_INSTANCE_PROFILE_4_SLICE:      alignedPlacements(4, 4, 8),
	nvml.GPU_INSTANCE_PROFILE_7_SLICE:      alignedPlacements(8, 8, 8),
}

// alignedPlacements returns placements of size that start at multiples of size
// below limit and end within total.
func alignedPlacements(size, limit, total uint32) []nvml.GpuInstancePlacement {
	var out []nvml.GpuInstancePlacement
	for s := uint32(0); s < limit && s+size <= total; s += size {
		out = append(out, nvml.GpuInstancePlacement{Start: s, Size: size})
	}
	return out
}

// newMIGTables deep-copies go-nvml's MIG tables (they are package globals
// shared by every mock) and applies real placements and memory sizes.
func newMIGTables(src gpus.MIGProfileConfig, memMiB map[int]uint64) *migTables {
	t := &migTables{
		gi:            make(map[int]nvml.GpuInstanceProfileInfo, len(src.GpuInstanceProfiles)),
		giPlacements:  make(map[int][]nvml.GpuInstancePlacement, len(src.GpuInstanceProfiles)),
		ci:            make(map[int]map[int]nvml.ComputeInstanceProfileInfo, len(src.ComputeInstanceProfiles)),
		memorySlices:  8,
		computeSlices: 7,
	}
	for id, info := range src.GpuInstanceProfiles {
		p, ok := realPlacements[id]
		if !ok {
			continue
		}
		if mem, ok := memMiB[id]; ok {
			info.MemorySizeMB = mem
		}
		t.gi[id] = info
		t.giPlacements[id] = slices.Clone(p)
	}
	for gi, cis := range src.ComputeInstanceProfiles {
		if _, ok := t.gi[gi]; ok {
			t.ci[gi] = maps.Clone(cis)
		}
	}
	return t
}

// ciPlacements returns where a compute instance of size slices may sit in a GPU
// instance of giSlices compute slices: aligned to the next power of two.
func ciPlacements(size, giSlices uint32) []nvml.ComputeInstancePlacement {
	align := uint32(1)
	for align < size {
		align <<= 1
	}
	var out []nvml.ComputeInstancePlacement
	for s := uint32(0); s+size <= giSlices; s += align {
		out = append(out, nvml.ComputeInstancePlacement{Start: s, Size: size})
	}
	return out
}

// migMemoryGB is the memory part of a MIG profile name as NVIDIA's tools
// compute it: the instance's share of the GPU rounded up to eighths, times the
// GPU's memory in whole GiB.
func migMemoryGB(totalMiB, instanceMiB uint64) uint64 {
	frac := math.Ceil(float64(instanceMiB)/float64(totalMiB)*8) / 8
	totalGB := (totalMiB + 1023) / 1024
	return uint64(math.Round(frac * float64(totalGB)))
}

// migProfileName returns the canonical profile name of a GPU instance
// ("1g.10gb", "1g.10gb+me") or of a smaller compute instance inside it
// ("1c.3g.40gb").
func migProfileName(m *model, giProfile int, ciSlices uint32) string {
	info := m.mig.gi[giProfile]
	var b strings.Builder
	if ciSlices != 0 && ciSlices != info.SliceCount {
		b.WriteString(strconv.Itoa(int(ciSlices)) + "c.")
	}
	b.WriteString(strconv.Itoa(int(info.SliceCount)) + "g.")
	b.WriteString(strconv.FormatUint(migMemoryGB(m.memoryMiB, info.MemorySizeMB), 10) + "gb")
	if giProfile == nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1 {
		b.WriteString("+me")
	}
	return b.String()
}

// supportedEvents is the event mask a model offers.
func (m *model) supportedEvents() uint64 {
	mask := uint64(nvml.EventTypeXidCriticalError | nvml.EventTypePState | nvml.EventTypeClock)
	if m.ecc {
		mask |= nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError
	}
	return mask
}

// config returns the go-nvml mock configuration for the model, corrected.
func (m *model) config() gpus.Config {
	c := gpus.Config{
		Name:         m.name,
		Architecture: m.arch,
		Brand:        m.brand,
		MemoryMB:     m.memoryMiB,
		CudaMajor:    m.ccMajor,
		CudaMinor:    m.ccMinor,
		PciDeviceId:  m.pciDeviceID,
	}
	if m.mig != nil {
		c.MIGProfiles = gpus.MIGProfileConfig{
			GpuInstanceProfiles:     m.mig.gi,
			ComputeInstanceProfiles: m.mig.ci,
			GpuInstancePlacements:   m.mig.giPlacements,
		}
	}
	return c
}
