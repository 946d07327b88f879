package gpuaudit

import (
	"fmt"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// TestMIGMinorsSample checks the sample of /proc/driver/nvidia-caps/mig-minors
// against the lines NVIDIA publishes and that every line parses. The
// sample is the whole file as the driver writes it: config, monitor, then for
// each of 32 GPU minors and 15 GPU instance IDs the instance's access
// capability followed by those of its 8 compute instances.
func TestMIGMinorsSample(t *testing.T) {
	// NVIDIA's MIG User Guide, "Device Nodes and Capabilities": the head and
	// tail of the file, and the nodes of GPU instance 1 of GPU 0 with three
	// compute instances (nvidia-cap12 to 15). NVIDIA's k8s-dra-driver-gpu
	// (cmd/gpu-kubelet-plugin) quotes lines from the middle.
	published := map[string]uint32{
		"config": 1, "monitor": 2,
		"gpu0/gi0/access": 3, "gpu0/gi0/ci0/access": 4, "gpu0/gi0/ci1/access": 5, "gpu0/gi0/ci2/access": 6,
		"gpu0/gi1/access": 12, "gpu0/gi1/ci0/access": 13, "gpu0/gi1/ci1/access": 14, "gpu0/gi1/ci2/access": 15,
		"gpu3/gi3/ci3/access": 439, "gpu3/gi3/ci4/access": 440, "gpu3/gi3/ci5/access": 441,
		"gpu6/gi11/ci5/access": 918, "gpu6/gi11/ci6/access": 919, "gpu6/gi11/ci7/access": 920,
		"gpu31/gi14/ci6/access": 4321, "gpu31/gi14/ci7/access": 4322,
	}
	caps := parseMIGMinors(readMIGMinorsSample(t))
	if want := 2 + 32*15*(1+8); len(caps) != want {
		t.Errorf("parsed %d capabilities, want %d (every line)", len(caps), want)
	}
	names := map[string]uint32{}
	minors := map[uint32]string{}
	for _, c := range caps {
		n := capName(c)
		if other, dup := minors[c.minor]; dup {
			t.Errorf("minor %d given to %s and %s", c.minor, other, n)
		}
		names[n], minors[c.minor] = c.minor, n
	}
	for name, want := range published {
		if got, ok := names[name]; !ok || got != want {
			t.Errorf("%s: minor %d (present %t), NVIDIA publishes %d", name, got, ok, want)
		}
	}
}

func TestParseMIGMinorsLines(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []migCap
	}{
		{"config", "config 1", []migCap{{kind: capConfig, minor: 1, ci: -1}}},
		{"monitor", "monitor 2", []migCap{{kind: capMonitor, minor: 2, ci: -1}}},
		{"gpu instance", "gpu2/gi1/access 282", []migCap{{kind: capGPUInstance, minor: 282, gpu: 2, gi: 1, ci: -1}}},
		{"compute instance", "gpu2/gi1/ci7/access 290", []migCap{{kind: capComputeInstance, minor: 290, gpu: 2, gi: 1, ci: 7}}},
		{"trailing blank", "gpu0/gi0/access 3  ", []migCap{{kind: capGPUInstance, minor: 3, ci: -1}}},
		{"no minor", "gpu0/gi0/access", nil},
		{"minor not a number", "gpu0/gi0/access x", nil},
		{"negative gpu", "gpu-1/gi0/access 3", nil},
		{"signed id", "gpu+1/gi0/access 3", nil},
		{"gi without id", "gpu0/gi/access 3", nil},
		{"not access", "gpu0/gi0/ci0/mode 3", nil},
		{"too deep", "gpu0/gi0/ci0/x0/access 3", nil},
		{"another capability", "fabric-mgmt 5", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseMIGMinors([]byte(tt.line + "\n"))
			if len(got) != len(tt.want) || (len(got) == 1 && got[0] != tt.want[0]) {
				t.Errorf("parseMIGMinors(%q) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

// newMIGEnabledGPU is a GPU in MIG mode; each MIG device is "gi/ci".
func newMIGEnabledGPU(index, minor int, uuid string, migs ...[2]int) gpu.Device {
	d := gpu.Device{Index: index, Minor: minor, UUID: uuid, MIGEnabled: true}
	for _, m := range migs {
		d.MIGDevices = append(d.MIGDevices, gpu.MIGDevice{Parent: index, UUID: migUUID(uuid, m[0], m[1]),
			GPUInstanceID: m[0], ComputeInstanceID: m[1]})
	}
	return d
}

func migUUID(gpuUUID string, gi, ci int) string {
	return fmt.Sprintf("MIG-%s-%d-%d", gpuUUID, gi, ci)
}

// TestMIGCapabilities checks which pod may open which nvidia-caps node, with
// the minors of the driver's mig-minors file, on a machine whose NVML
// indices are not its device minors, with a GPU instance split into two
// compute instances (two MIG devices sharing one GPU instance capability).
func TestMIGCapabilities(t *testing.T) {
	m := &gpu.Machine{Devices: []gpu.Device{
		// NVML index 0 is /dev/nvidia2: GPU instance 1 holds compute
		// instances 0 and 1 (two 1c.2g MIG devices), GPU instance 5 one.
		newMIGEnabledGPU(0, 2, "GPU-a", [2]int{1, 0}, [2]int{1, 1}, [2]int{5, 0}),
		// NVML index 1 is /dev/nvidia0, not in MIG mode.
		{Index: 1, Minor: 0, UUID: "GPU-b"},
	}}
	table := newDeviceTable(Majors{NVIDIA: NVIDIAMajor, UVM: uvmMajor, Caps: capsMajor}, m, readMIGMinorsSample(t))
	holds := func(id string) []podresources.Holder {
		return []podresources.Holder{{Namespace: "ml", Pod: "p", Container: "c", DeviceID: id}}
	}
	ci0, ci1, gi5 := holds(migUUID("GPU-a", 1, 0)), holds(migUUID("GPU-a", 1, 1)), holds(migUUID("GPU-a", 5, 0))
	whole := holds("GPU-b")
	tests := []struct {
		name      string
		cap       string
		wantKind  DeviceKind
		wantLabel string
		allowed   [][]podresources.Holder
		refused   [][]podresources.Holder
	}{
		{"shared gpu instance", "gpu2/gi1/access", KindMIG, "0", [][]podresources.Holder{ci0, ci1}, [][]podresources.Holder{gi5, whole}},
		{"compute instance 0", "gpu2/gi1/ci0/access", KindMIG, "0", [][]podresources.Holder{ci0}, [][]podresources.Holder{ci1, gi5, whole}},
		{"compute instance 1", "gpu2/gi1/ci1/access", KindMIG, "0", [][]podresources.Holder{ci1}, [][]podresources.Holder{ci0, gi5, whole}},
		{"other gpu instance", "gpu2/gi5/access", KindMIG, "0", [][]podresources.Holder{gi5}, [][]podresources.Holder{ci0, ci1, whole}},
		{"other gpu instance's compute instance", "gpu2/gi5/ci0/access", KindMIG, "0", [][]podresources.Holder{gi5}, [][]podresources.Holder{ci0, ci1}},
		{"gpu instance that does not exist", "gpu2/gi2/access", KindMIG, "0", nil, [][]podresources.Holder{ci0, ci1, gi5, whole}},
		{"compute instance that does not exist", "gpu2/gi1/ci2/access", KindMIG, "0", nil, [][]podresources.Holder{ci0, ci1, gi5}},
		{"instance on a gpu without MIG", "gpu0/gi1/access", KindMIG, "1", nil, [][]podresources.Holder{whole, ci0}},
		// Index 0's minor-0 reading would make this GPU-a's: it is GPU-b's.
		{"minor, not index", "gpu0/gi1/ci0/access", KindMIG, "1", nil, [][]podresources.Holder{ci0, whole}},
		{"gpu the machine does not have", "gpu7/gi1/access", KindMIG, "nvidia7", nil, [][]podresources.Holder{ci0, whole}},
		{"config", "config", KindAdmin, "nvidia-cap-config", nil, [][]podresources.Holder{ci0, whole}},
		{"monitor", "monitor", KindAdmin, "nvidia-cap-monitor", nil, [][]podresources.Holder{ci0, whole}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := table.lookup(DeviceNumber{capsMajor, capMinor(t, tt.cap)})
			if info.Kind != tt.wantKind || info.Label != tt.wantLabel {
				t.Errorf("%s is %s %q, want %s %q", tt.cap, info.Kind, info.Label, tt.wantKind, tt.wantLabel)
			}
			for _, h := range tt.allowed {
				if !table.allows(info, table.granted(h)) {
					t.Errorf("a holder of %s may not open %s", h[0].DeviceID, tt.cap)
				}
			}
			for _, h := range tt.refused {
				if table.allows(info, table.granted(h)) {
					t.Errorf("a holder of %s may open %s", h[0].DeviceID, tt.cap)
				}
			}
		})
	}
	// A holder of a MIG device may open its parent GPU, not the other one.
	if !table.allows(table.lookup(DeviceNumber{NVIDIAMajor, 2}), table.granted(ci1)) ||
		table.allows(table.lookup(DeviceNumber{NVIDIAMajor, 0}), table.granted(ci1)) {
		t.Error("a MIG device's holder: want its parent /dev/nvidia2 allowed and /dev/nvidia0 refused")
	}
	// An nvidia-caps minor the file does not list stays a control node.
	if info := table.lookup(DeviceNumber{capsMajor, 9999}); info.Kind != KindControl {
		t.Errorf("an unlisted nvidia-caps minor is %s, want %s", info.Kind, KindControl)
	}
}
