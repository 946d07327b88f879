package sim

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

type topoPair struct {
	a, b int
	want nvml.GpuTopologyLevel
}

func TestBuiltinMachines(t *testing.T) {
	tests := []struct {
		name    string
		count   int
		gpuName string
		memMiB  uint64
		arch    nvml.DeviceArchitecture
		brand   nvml.BrandType
		cc      [2]int
		buses   []uint32
		numa    []int
		nvlinks int
		remote  nvml.IntNvLinkDeviceType // on link 0; 0 with nvlinks==0
		mig     bool
		driver  string
		cuda    int
		topo    []topoPair
	}{
		{
			name: "dgx-a100", count: 8, gpuName: "NVIDIA A100-SXM4-40GB", memMiB: 40960, arch: nvml.DEVICE_ARCH_AMPERE, brand: nvml.BRAND_NVIDIA, cc: [2]int{8, 0},
			buses: []uint32{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd}, numa: []int{0, 0, 0, 0, 1, 1, 1, 1},
			nvlinks: 12, remote: nvml.NVLINK_DEVICE_TYPE_SWITCH, mig: true, driver: "550.54.15", cuda: 12040,
			topo: []topoPair{{0, 1, nvml.TOPOLOGY_SINGLE}, {0, 2, nvml.TOPOLOGY_NODE}, {0, 7, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "dgx-h100", count: 8, gpuName: "NVIDIA H100 80GB HBM3", memMiB: 81559, arch: nvml.DEVICE_ARCH_HOPPER, brand: nvml.BRAND_NVIDIA, cc: [2]int{9, 0},
			buses: []uint32{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}, numa: []int{0, 0, 0, 0, 1, 1, 1, 1},
			nvlinks: 18, remote: nvml.NVLINK_DEVICE_TYPE_SWITCH, mig: true, driver: "550.54.15", cuda: 12040,
			topo: []topoPair{{2, 3, nvml.TOPOLOGY_SINGLE}, {1, 3, nvml.TOPOLOGY_NODE}, {3, 4, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "dgx-h200", count: 8, gpuName: "NVIDIA H200", memMiB: 143771, arch: nvml.DEVICE_ARCH_HOPPER, brand: nvml.BRAND_NVIDIA, cc: [2]int{9, 0},
			buses: []uint32{0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb}, numa: []int{0, 0, 0, 0, 1, 1, 1, 1},
			nvlinks: 18, remote: nvml.NVLINK_DEVICE_TYPE_SWITCH, mig: true, driver: "550.90.07", cuda: 12040,
			topo: []topoPair{{6, 7, nvml.TOPOLOGY_SINGLE}, {4, 7, nvml.TOPOLOGY_NODE}, {0, 5, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "dgx-b200", count: 8, gpuName: "NVIDIA B200", memMiB: 183359, arch: nvml.DEVICE_ARCH_BLACKWELL, brand: nvml.BRAND_NVIDIA, cc: [2]int{10, 0},
			buses: []uint32{0x1b, 0x43, 0x52, 0x61, 0x9d, 0xc3, 0xd1, 0xdf}, numa: []int{0, 0, 0, 0, 1, 1, 1, 1},
			nvlinks: 18, remote: nvml.NVLINK_DEVICE_TYPE_SWITCH, mig: true, driver: "570.124.06", cuda: 12080,
			topo: []topoPair{{4, 5, nvml.TOPOLOGY_SINGLE}, {0, 3, nvml.TOPOLOGY_NODE}, {2, 6, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "pcie-4xl40s", count: 4, gpuName: "NVIDIA L40S", memMiB: 46068, arch: nvml.DEVICE_ARCH_ADA, brand: nvml.BRAND_NVIDIA, cc: [2]int{8, 9},
			buses: []uint32{0x17, 0x18, 0xb1, 0xb2}, numa: []int{0, 0, 1, 1}, driver: "550.54.15", cuda: 12040,
			topo: []topoPair{{0, 1, nvml.TOPOLOGY_SINGLE}, {2, 3, nvml.TOPOLOGY_SINGLE}, {1, 2, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "pcie-8xa100-80gb", count: 8, gpuName: "NVIDIA A100 80GB PCIe", memMiB: 81920, arch: nvml.DEVICE_ARCH_AMPERE, brand: nvml.BRAND_NVIDIA, cc: [2]int{8, 0},
			buses: []uint32{0x1b, 0x1c, 0x3d, 0x3e, 0x9b, 0x9c, 0xbd, 0xbe}, numa: []int{0, 0, 0, 0, 1, 1, 1, 1},
			nvlinks: 12, remote: nvml.NVLINK_DEVICE_TYPE_GPU, mig: true, driver: "550.54.15", cuda: 12040,
			topo: []topoPair{{0, 1, nvml.TOPOLOGY_SINGLE}, {1, 2, nvml.TOPOLOGY_NODE}, {3, 4, nvml.TOPOLOGY_SYSTEM}},
		},
		{
			name: "ws-2xrtx4090", count: 2, gpuName: "NVIDIA GeForce RTX 4090", memMiB: 24564, arch: nvml.DEVICE_ARCH_ADA, brand: nvml.BRAND_GEFORCE, cc: [2]int{8, 9},
			buses: []uint32{0x01, 0x41}, numa: []int{0, 0}, driver: "550.54.15", cuda: 12040,
			topo: []topoPair{{0, 1, nvml.TOPOLOGY_HOSTBRIDGE}},
		},
	}
	uuidRE := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, lib, _ := newMachine(t, tt.name)
			n, r := lib.DeviceGetCount()
			wantRet(t, "DeviceGetCount", r, nvml.SUCCESS)
			if n != tt.count {
				t.Fatalf("DeviceGetCount = %d, want %d", n, tt.count)
			}
			if v, _ := lib.SystemGetDriverVersion(); v != tt.driver {
				t.Errorf("driver %s, want %s", v, tt.driver)
			}
			if v, _ := lib.SystemGetNVMLVersion(); v != fmt.Sprintf("%d.%s", tt.cuda/1000, tt.driver) {
				t.Errorf("NVML version %s", v)
			}
			if v, _ := lib.SystemGetCudaDriverVersion(); v != tt.cuda {
				t.Errorf("CUDA %d, want %d", v, tt.cuda)
			}
			other, err := Open(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			renamed, err := Open(tt.name, WithName("node-7"))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			devs := make([]nvml.Device, n)
			for i := range n {
				d := handle(t, lib, i)
				devs[i] = d
				if name, _ := d.GetName(); name != tt.gpuName {
					t.Errorf("gpu %d name %q, want %q", i, name, tt.gpuName)
				}
				if idx, _ := d.GetIndex(); idx != i {
					t.Errorf("gpu %d index %d", i, idx)
				}
				if minor, _ := d.GetMinorNumber(); minor != i {
					t.Errorf("gpu %d minor %d", i, minor)
				}
				if a, _ := d.GetArchitecture(); a != tt.arch {
					t.Errorf("gpu %d arch %v", i, a)
				}
				if b, _ := d.GetBrand(); b != tt.brand {
					t.Errorf("gpu %d brand %v", i, b)
				}
				if maj, mnr, _ := d.GetCudaComputeCapability(); maj != tt.cc[0] || mnr != tt.cc[1] {
					t.Errorf("gpu %d cc %d.%d", i, maj, mnr)
				}
				mem, r := d.GetMemoryInfo()
				wantRet(t, "GetMemoryInfo", r, nvml.SUCCESS)
				if mem.Total != tt.memMiB<<20 {
					t.Errorf("gpu %d memory %d MiB, want %d", i, mem.Total>>20, tt.memMiB)
				}
				u, _ := d.GetUUID()
				if !uuidRE.MatchString(u) || seen[u] {
					t.Errorf("gpu %d UUID %q malformed or repeated", i, u)
				}
				seen[u] = true
				if m.UUID(i) != u || other.UUID(i) != u {
					t.Errorf("gpu %d UUID not stable: %s, %s, %s", i, u, m.UUID(i), other.UUID(i))
				}
				if renamed.UUID(i) == u {
					t.Errorf("gpu %d UUID does not depend on the machine name", i)
				}
				pci, _ := d.GetPciInfo()
				wantBus := fmt.Sprintf("00000000:%02X:00.0", tt.buses[i])
				if got := cString(pci.BusId[:]); got != wantBus {
					t.Errorf("gpu %d BusId %q, want %q", i, got, wantBus)
				}
				if got := cString(pci.BusIdLegacy[:]); got != wantBus[4:] {
					t.Errorf("gpu %d BusIdLegacy %q, want %q", i, got, wantBus[4:])
				}
				if pci.Domain != 0 || pci.Bus != tt.buses[i] || pci.Device != 0 || pci.PciDeviceId&0xFFFF != 0x10DE {
					t.Errorf("gpu %d PciInfo %+v", i, pci)
				}
				if numa, _ := d.GetNumaNodeId(); numa != tt.numa[i] {
					t.Errorf("gpu %d NUMA %d, want %d", i, numa, tt.numa[i])
				}
				for _, id := range []string{wantBus, wantBus[4:], strings.ToLower(wantBus[4:])} {
					if h, r := lib.DeviceGetHandleByPciBusId(id); r != nvml.SUCCESS || h != d {
						t.Errorf("DeviceGetHandleByPciBusId(%q) = %v, %v", id, h, r)
					}
				}
				if h, r := lib.DeviceGetHandleByUUID(u); r != nvml.SUCCESS || h != d {
					t.Errorf("DeviceGetHandleByUUID(%q) = %v, %v", u, h, r)
				}
				_, _, r = d.GetMigMode()
				if (r == nvml.SUCCESS) != tt.mig {
					t.Errorf("gpu %d GetMigMode returned %v, MIG capable %v", i, r, tt.mig)
				}
				checkNVLinks(t, d, tt.nvlinks, tt.remote)
			}
			if _, r := lib.DeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000"); r != nvml.ERROR_NOT_FOUND {
				t.Errorf("unknown UUID returned %v", r)
			}
			if _, r := lib.DeviceGetHandleByIndex(n); r != nvml.ERROR_INVALID_ARGUMENT {
				t.Errorf("index %d returned %v", n, r)
			}
			// Topology: symmetric, INTERNAL exactly on the diagonal, as described.
			for i := range n {
				for j := range n {
					a, r1 := devs[i].GetTopologyCommonAncestor(devs[j])
					b, r2 := devs[j].GetTopologyCommonAncestor(devs[i])
					if r1 != nvml.SUCCESS || r2 != nvml.SUCCESS || a != b || (a == nvml.TOPOLOGY_INTERNAL) != (i == j) {
						t.Errorf("topology %d-%d: %v/%v %v/%v", i, j, a, r1, b, r2)
					}
				}
			}
			for _, p := range tt.topo {
				if got, _ := devs[p.a].GetTopologyCommonAncestor(devs[p.b]); got != p.want {
					t.Errorf("topology %d-%d = %v, want %v", p.a, p.b, got, p.want)
				}
			}
		})
	}
}

func checkNVLinks(t *testing.T, d nvml.Device, links int, remote nvml.IntNvLinkDeviceType) {
	t.Helper()
	if links == 0 {
		if _, r := d.GetNvLinkState(0); r != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("GetNvLinkState on a GPU without NVLink returned %v", r)
		}
		return
	}
	for l := range nvml.NVLINK_MAX_LINKS {
		st, r := d.GetNvLinkState(l)
		if l >= links {
			if r != nvml.ERROR_INVALID_ARGUMENT {
				t.Errorf("link %d of %d returned %v", l, links, r)
			}
			continue
		}
		if r != nvml.SUCCESS || st != nvml.FEATURE_ENABLED {
			t.Errorf("link %d: %v %v", l, st, r)
		}
		typ, r := d.GetNvLinkRemoteDeviceType(l)
		if r != nvml.SUCCESS || typ != remote {
			t.Errorf("link %d remote type %v %v, want %v", l, typ, r, remote)
		}
		pci, r := d.GetNvLinkRemotePciInfo(l)
		if r != nvml.SUCCESS || cString(pci.BusId[:]) == "" {
			t.Errorf("link %d remote PCI %v", l, r)
		}
	}
}

func TestNVLinkBridgePeers(t *testing.T) {
	_, lib, _ := newMachine(t, "pcie-8xa100-80gb")
	for _, pair := range [][2]int{{0, 1}, {3, 2}, {6, 7}} {
		a, b := handle(t, lib, pair[0]), handle(t, lib, pair[1])
		want, _ := b.GetPciInfo()
		got, r := a.GetNvLinkRemotePciInfo(5)
		if r != nvml.SUCCESS || got != want {
			t.Errorf("gpu %d link 5 reaches %q, want peer %q", pair[0], cString(got.BusId[:]), cString(want.BusId[:]))
		}
	}
}

func TestUnbridgedNVLinkIsDisabled(t *testing.T) {
	m, err := New(Profile{Name: "lonely", GPUs: []GPUGroup{{Model: "a100-pcie-80gb", Count: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	lib := m.NVML()
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	defer func() { wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS) }()
	d := handle(t, lib, 0)
	if st, r := d.GetNvLinkState(0); r != nvml.SUCCESS || st != nvml.FEATURE_DISABLED {
		t.Errorf("GetNvLinkState = %v %v, want FEATURE_DISABLED", st, r)
	}
	if _, r := d.GetNvLinkRemotePciInfo(0); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetNvLinkRemotePciInfo on an inactive link = %v", r)
	}
}

func TestExampleTopology(t *testing.T) {
	_, lib, _ := newMachine(t, "testdata/example-fleet.yaml")
	tests := []topoPair{
		{0, 1, nvml.TOPOLOGY_SINGLE},
		{0, 4, nvml.TOPOLOGY_MULTIPLE},
		{2, 5, nvml.TOPOLOGY_HOSTBRIDGE},
		{2, 3, nvml.TOPOLOGY_SINGLE},
		{0, 2, nvml.TOPOLOGY_SYSTEM},
		{3, 5, nvml.TOPOLOGY_HOSTBRIDGE},
		{1, 4, nvml.TOPOLOGY_MULTIPLE},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d", tt.a, tt.b), func(t *testing.T) {
			got, r := handle(t, lib, tt.a).GetTopologyCommonAncestor(handle(t, lib, tt.b))
			if r != nvml.SUCCESS || got != tt.want {
				t.Errorf("got %v %v, want %v", got, r, tt.want)
			}
		})
	}
	if name, _ := handle(t, lib, 5).GetName(); name != "NVIDIA L40S" {
		t.Errorf("gpu 5 is %q", name)
	}
}

func TestCallsAndInit(t *testing.T) {
	m, err := Open("ws-2xrtx4090")
	if err != nil {
		t.Fatal(err)
	}
	lib := m.NVML()
	if _, r := lib.DeviceGetCount(); r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("DeviceGetCount before Init returned %v", r)
	}
	if r := lib.Shutdown(); r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("Shutdown before Init returned %v", r)
	}
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	d := handle(t, lib, 1)
	for range 3 {
		_, r := d.GetTemperature(nvml.TEMPERATURE_GPU)
		wantRet(t, "GetTemperature", r, nvml.SUCCESS)
	}
	_, r := lib.DeviceGetTemperature(d, nvml.TEMPERATURE_GPU) // library form forwards to the device
	wantRet(t, "DeviceGetTemperature", r, nvml.SUCCESS)
	if name, r := lib.DeviceGetName(d); r != nvml.SUCCESS || name != "NVIDIA GeForce RTX 4090" {
		t.Errorf("DeviceGetName = %q %v", name, r)
	}
	wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS)
	if _, r := d.GetName(); r != nvml.SUCCESS {
		t.Errorf("still initialised once: GetName returned %v", r)
	}
	wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS)
	if _, r := d.GetName(); r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("GetName after the last Shutdown returned %v", r)
	}
	for name, want := range map[string]int{"Init": 2, "Shutdown": 3, "DeviceGetCount": 1, "DeviceGetHandleByIndex": 1,
		"GetTemperature": 4, "GetName": 3, "DeviceGetName": 0, "GetPowerUsage": 0} {
		if got := m.Calls(name); got != want {
			t.Errorf("Calls(%q) = %d, want %d", name, got, want)
		}
	}
	m.ResetCalls()
	if m.Calls("Init") != 0 {
		t.Errorf("ResetCalls kept counts")
	}
}

func TestUnmodelledCallsAnswerNotSupported(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-h100")
	d := handle(t, lib, 0)
	if _, r := d.GetSerial(); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetSerial returned %v", r)
	}
	if _, r := d.GetVgpuCapabilities(0); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetVgpuCapabilities returned %v", r)
	}
	if _, r := lib.SystemGetProcessName(1); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("SystemGetProcessName returned %v", r)
	}
	if _, r := lib.DeviceGetSerial(d); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("DeviceGetSerial returned %v", r)
	}
	if _, r := lib.DeviceGetName(nil); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("DeviceGetName(nil) returned %v", r)
	}
	if m.Calls("GetSerial") != 2 || m.Calls("SystemGetProcessName") != 1 {
		t.Errorf("unmodelled calls not counted: %d %d", m.Calls("GetSerial"), m.Calls("SystemGetProcessName"))
	}
	if err := lib.Extensions().LookupSymbol("nvmlDeviceGetGpuFabricInfo"); err != nil {
		t.Errorf("LookupSymbol: %v", err)
	}
	if s := lib.ErrorString(nvml.ERROR_GPU_IS_LOST); s != "ERROR_GPU_IS_LOST" {
		t.Errorf("ErrorString = %q", s)
	}
}
