package gpuaudit

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// DeviceKind says what a device node gives access to.
type DeviceKind string

// Device kinds.
const (
	// KindGPU is /dev/nvidia<N>: one physical GPU.
	KindGPU DeviceKind = "gpu"
	// KindMIG is an nvidia-caps node granting access to one MIG instance.
	KindMIG DeviceKind = "mig"
	// KindControl are nodes every GPU user opens (nvidiactl, nvidia-uvm,
	// nvidia-modeset, unknown caps): allowed to any pod with a GPU.
	KindControl DeviceKind = "control"
	// KindAdmin are the nvidia-caps config and monitor capabilities:
	// allowed to no pod.
	KindAdmin DeviceKind = "admin"
)

// DeviceInfo is what a watched device number is.
type DeviceInfo struct {
	Kind DeviceKind
	// UUID is the GPU's (KindGPU) or the MIG device's (KindMIG); empty for
	// a GPU the machine model does not know.
	UUID string
	// Label is the gpu label of the metrics: the GPU index for GPUs and MIG
	// capabilities (as dcgm-exporter's gpu label), the node's name otherwise.
	Label string
}

// deviceTable maps device numbers to devices and device IDs (as the
// kubelet reports them) to the GPUs and MIG devices they grant.
type deviceTable struct {
	majors Majors
	byDev  map[DeviceNumber]DeviceInfo
	// grants maps a device ID (GPU UUID, MIG UUID) to the UUIDs its holder
	// may open: a MIG device grants itself and its parent GPU.
	grants map[string][]string
}

// newDeviceTable builds the table for machine m; migMinors is the contents
// of /proc/driver/nvidia-caps/mig-minors (nil when absent).
func newDeviceTable(majors Majors, m *gpu.Machine, migMinors []byte) *deviceTable {
	t := &deviceTable{majors: majors, byDev: map[DeviceNumber]DeviceInfo{}, grants: map[string][]string{}}
	if m == nil {
		return t
	}
	byMinor := map[int]*gpu.Device{}
	for i := range m.Devices {
		d := &m.Devices[i]
		t.grants[d.UUID] = []string{d.UUID}
		if d.Minor >= 0 {
			byMinor[d.Minor] = d
			t.byDev[DeviceNumber{majors.NVIDIA, uint32(d.Minor)}] = DeviceInfo{Kind: KindGPU, UUID: d.UUID, Label: strconv.Itoa(d.Index)}
		}
		for _, md := range d.MIGDevices {
			t.grants[md.UUID] = []string{md.UUID, d.UUID}
		}
	}
	if majors.Caps == 0 {
		return t
	}
	// "config 1", "monitor 2", "gpu<minor>/gi<id>/access <n>",
	// "gpu<minor>/gi<id>/ci<id>/access <n>".
	sc := bufio.NewScanner(bytes.NewReader(migMinors))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			continue
		}
		num := DeviceNumber{majors.Caps, uint32(n)}
		if f[0] == "config" || f[0] == "monitor" {
			t.byDev[num] = DeviceInfo{Kind: KindAdmin, Label: "nvidia-cap-" + f[0]}
			continue
		}
		parts := strings.Split(f[0], "/")
		if len(parts) < 3 || !strings.HasPrefix(parts[0], "gpu") || !strings.HasPrefix(parts[1], "gi") {
			continue
		}
		minor, err1 := strconv.Atoi(strings.TrimPrefix(parts[0], "gpu"))
		gi, err2 := strconv.Atoi(strings.TrimPrefix(parts[1], "gi"))
		d := byMinor[minor]
		if err1 != nil || err2 != nil || d == nil {
			continue
		}
		for _, md := range d.MIGDevices {
			if md.GPUInstanceID == gi {
				t.byDev[num] = DeviceInfo{Kind: KindMIG, UUID: md.UUID, Label: strconv.Itoa(d.Index)}
			}
		}
	}
	return t
}

// readMIGMinors reads the mig-minors file; nil when it is absent.
func readMIGMinors(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return data
}

// lookup says what device number d is.
func (t *deviceTable) lookup(d DeviceNumber) DeviceInfo {
	if info, ok := t.byDev[d]; ok {
		return info
	}
	switch d.Major {
	case t.majors.NVIDIA:
		switch d.Minor {
		case 255:
			return DeviceInfo{Kind: KindControl, Label: "nvidiactl"}
		case 254:
			return DeviceInfo{Kind: KindControl, Label: "nvidia-modeset"}
		}
		return DeviceInfo{Kind: KindGPU, Label: "nvidia" + strconv.Itoa(int(d.Minor))}
	case t.majors.UVM:
		if d.Minor == 1 {
			return DeviceInfo{Kind: KindControl, Label: "nvidia-uvm-tools"}
		}
		return DeviceInfo{Kind: KindControl, Label: "nvidia-uvm"}
	case t.majors.Caps:
		return DeviceInfo{Kind: KindControl, Label: "nvidia-cap" + strconv.Itoa(int(d.Minor))}
	}
	return DeviceInfo{Kind: KindControl, Label: d.String()}
}

// granted returns the UUIDs the holders may open (GPUs, MIG devices and
// the parents of their MIG devices and shares); holders of devices that are
// not this machine's GPUs grant nothing.
func (t *deviceTable) granted(holders []podresources.Holder) map[string]bool {
	out := map[string]bool{}
	for _, h := range holders {
		id, _, _ := strings.Cut(h.DeviceID, podresources.ReplicaSeparator)
		for _, u := range t.grants[id] {
			out[u] = true
		}
	}
	return out
}

// allows reports whether a pod holding granted may open info.
func (t *deviceTable) allows(info DeviceInfo, granted map[string]bool) bool {
	switch info.Kind {
	case KindGPU, KindMIG:
		return info.UUID != "" && granted[info.UUID]
	case KindControl:
		return len(granted) > 0
	}
	return false
}
