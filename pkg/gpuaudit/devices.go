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
	// Grant is what a pod must hold to open the device, as the device
	// table's grants name it: the GPU's UUID (KindGPU), the MIG device's
	// UUID (the capability of its compute instance) or "<GPU UUID>/gi<ID>"
	// (the capability of a GPU instance, which every MIG device in that
	// instance needs). Empty when no pod may open it: a GPU, or a GPU or
	// compute instance, the machine model does not have.
	Grant string
	// Label is the gpu label of the metrics: the GPU index for GPUs and MIG
	// capabilities (as dcgm-exporter's gpu label), the node's name otherwise.
	Label string
}

// deviceTable maps device numbers to devices and device IDs (as the
// kubelet reports them) to the GPUs and MIG devices they grant.
type deviceTable struct {
	majors Majors
	// byDev holds the machine's GPUs, the nvidia-caps capabilities of the
	// GPU and compute instances of its GPUs (those it has and those it has
	// not) and the MIG config and monitor capabilities.
	byDev map[DeviceNumber]DeviceInfo
	// otherGPUCaps maps the nvidia-caps minors of the MIG capabilities of
	// GPUs the machine does not have to those GPUs' minors (for the label).
	otherGPUCaps map[uint32]int
	// grants maps a device ID (GPU UUID, MIG UUID) to the grants its holder
	// has: a MIG device grants itself, its GPU instance and its parent GPU.
	grants map[string][]string
}

// gpuInstanceGrant names the grant of the GPU instance gi of GPU gpuUUID.
func gpuInstanceGrant(gpuUUID string, gi int) string {
	return gpuUUID + "/gi" + strconv.Itoa(gi)
}

// newDeviceTable builds the table for machine m; migMinors is the contents
// of /proc/driver/nvidia-caps/mig-minors (nil when absent).
func newDeviceTable(majors Majors, m *gpu.Machine, migMinors []byte) *deviceTable {
	t := &deviceTable{majors: majors, byDev: map[DeviceNumber]DeviceInfo{}, otherGPUCaps: map[uint32]int{}, grants: map[string][]string{}}
	if m == nil {
		return t
	}
	byMinor := map[int]*gpu.Device{}
	for i := range m.Devices {
		d := &m.Devices[i]
		t.grants[d.UUID] = []string{d.UUID}
		if d.Minor >= 0 {
			byMinor[d.Minor] = d
			t.byDev[DeviceNumber{majors.NVIDIA, uint32(d.Minor)}] = DeviceInfo{Kind: KindGPU, Grant: d.UUID, Label: strconv.Itoa(d.Index)}
		}
		for _, md := range d.MIGDevices {
			t.grants[md.UUID] = []string{md.UUID, gpuInstanceGrant(d.UUID, md.GPUInstanceID), d.UUID}
		}
	}
	if majors.Caps == 0 {
		return t
	}
	labels := map[int]string{}
	for _, c := range parseMIGMinors(migMinors) {
		num := DeviceNumber{majors.Caps, c.minor}
		switch c.kind {
		case capConfig, capMonitor:
			t.byDev[num] = DeviceInfo{Kind: KindAdmin, Label: "nvidia-cap-" + string(c.kind)}
			continue
		}
		d := byMinor[c.gpu]
		if d == nil {
			t.otherGPUCaps[c.minor] = c.gpu
			continue
		}
		label, ok := labels[c.gpu]
		if !ok {
			label = strconv.Itoa(d.Index)
			labels[c.gpu] = label
		}
		info := DeviceInfo{Kind: KindMIG, Label: label}
		for _, md := range d.MIGDevices {
			switch {
			case md.GPUInstanceID != c.gi:
			case c.kind == capGPUInstance:
				info.Grant = gpuInstanceGrant(d.UUID, c.gi)
			case md.ComputeInstanceID == c.ci:
				info.Grant = md.UUID
			}
		}
		t.byDev[num] = info
	}
	return t
}

// migCapKind is what an nvidia-caps MIG capability gives access to.
type migCapKind string

const (
	capConfig          migCapKind = "config"  // creating and destroying MIG instances
	capMonitor         migCapKind = "monitor" // reading every MIG instance
	capGPUInstance     migCapKind = "gi"
	capComputeInstance migCapKind = "ci"
)

// migCap is one line of /proc/driver/nvidia-caps/mig-minors: the minor of
// the nvidia-caps device node (/dev/nvidia-caps/nvidia-cap<minor>) that
// grants a capability.
type migCap struct {
	kind  migCapKind
	minor uint32
	// gpu is the GPU's device minor (the N of /dev/nvidia<N>, NVML's
	// nvmlDeviceGetMinorNumber: not the NVML or nvidia-smi index), gi and
	// ci the GPU and compute instance IDs; ci is -1 for a GPU instance.
	gpu, gi, ci int
}

// parseMIGMinors parses the mig-minors file. Its format is documented in
// NVIDIA's MIG User Guide ("Device Nodes and Capabilities",
// https://docs.nvidia.com/datacenter/tesla/mig-user-guide/): one
// capability per line, its name and its nvidia-caps minor, for every GPU
// and compute instance that could exist, whether it does or not:
//
//	config 1
//	monitor 2
//	gpu0/gi0/access 3
//	gpu0/gi0/ci0/access 4
//	...
//	gpu31/gi14/ci7/access 4322
//
// where gpu<N> is the GPU's device minor. A process needs the capability of
// its compute instance and of that instance's GPU instance to run on a MIG
// device. Lines of another form are skipped, as NVIDIA's container toolkit
// (internal/nvcaps) does: a later driver may add capabilities.
func parseMIGMinors(data []byte) []migCap {
	var out []migCap
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, num, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		minor, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			continue
		}
		c := migCap{kind: migCapKind(name), minor: uint32(minor), ci: -1}
		switch c.kind {
		case capConfig, capMonitor:
			out = append(out, c)
			continue
		}
		parts := strings.Split(name, "/")
		if len(parts) < 3 || len(parts) > 4 || parts[len(parts)-1] != "access" {
			continue
		}
		var okGPU, okGI bool
		c.gpu, okGPU = idAfter(parts[0], "gpu")
		c.gi, okGI = idAfter(parts[1], "gi")
		if !okGPU || !okGI {
			continue
		}
		c.kind = capGPUInstance
		if len(parts) == 4 {
			var okCI bool
			if c.ci, okCI = idAfter(parts[2], "ci"); !okCI {
				continue
			}
			c.kind = capComputeInstance
		}
		out = append(out, c)
	}
	return out
}

// idAfter parses the decimal number after prefix in s ("gi12" -> 12).
func idAfter(s, prefix string) (int, bool) {
	digits, ok := strings.CutPrefix(s, prefix)
	if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
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
		if gpuMinor, ok := t.otherGPUCaps[d.Minor]; ok {
			return DeviceInfo{Kind: KindMIG, Label: "nvidia" + strconv.Itoa(gpuMinor)}
		}
		return DeviceInfo{Kind: KindControl, Label: "nvidia-cap" + strconv.Itoa(int(d.Minor))}
	}
	return DeviceInfo{Kind: KindControl, Label: d.String()}
}

// granted returns the grants of the holders (their GPUs, MIG devices, the
// GPU instances and parent GPUs of their MIG devices, the GPUs of their
// shares); holders of devices that are not this machine's GPUs grant
// nothing.
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
		return info.Grant != "" && granted[info.Grant]
	case KindControl:
		return len(granted) > 0
	}
	return false
}
