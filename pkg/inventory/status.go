package inventory

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// Node labels the layout reconciler (pkg/mig/reconcile) keeps; the
// inventory only reads them.
const (
	MIGConfigLabel = "nvidia.com/mig.config"
	MIGStateLabel  = "nvidia.com/mig.config.state"
)

// Snapshot is everything a GPUNode status and the node's GFD labels are
// built from, read from the agent's parts at one moment.
type Snapshot struct {
	// Machine is the snapshot the device plugin serves; nil publishes nothing.
	Machine *gpu.Machine
	// Options are the device plugin's resolved options (the MIG strategy).
	Options deviceplugin.Options
	// Resources are the extended resources the device plugin advertises.
	Resources []deviceplugin.Resource
	// Health is each GPU's health; a GPU missing here counts as healthy.
	Health []health.Status
	// Holders are the devices containers hold (the PodResources view).
	Holders []podresources.Holder
	// NodeLabels are the Node's labels (the MIG layout state).
	NodeLabels map[string]string
	// MachineType is the server model (DMI product name) for
	// nvidia.com/gpu.machine; empty writes "unknown", as GFD does.
	MachineType string
}

// advertisedDevice is how one device (a GPU or MIG UUID) is advertised.
type advertisedDevice struct {
	resource string
	replicas int32
	shared   bool
}

// advertisedByUUID maps GPU and MIG UUIDs to their advertisement.
func advertisedByUUID(res []deviceplugin.Resource) map[string]advertisedDevice {
	out := map[string]advertisedDevice{}
	for _, r := range res {
		for _, d := range r.Devices {
			a := out[d.UUID]
			a.resource, a.shared = r.Name, r.Shared
			a.replicas++
			out[d.UUID] = a
		}
	}
	return out
}

func (a advertisedDevice) sharing() *v1alpha1.Sharing {
	if a.resource == "" {
		return nil
	}
	return &v1alpha1.Sharing{Resource: a.resource, Replicas: a.replicas}
}

// BuildStatus returns the GPUNode status of a snapshot, without the
// heartbeat and the layout's last change time, which the publisher keeps.
func BuildStatus(s Snapshot) v1alpha1.GPUNodeStatus {
	m := s.Machine
	if m == nil {
		return v1alpha1.GPUNodeStatus{}
	}
	st := v1alpha1.GPUNodeStatus{
		Backend: m.Backend,
		Reason:  m.Reason,
		Versions: v1alpha1.Versions{
			Driver: m.Versions.Driver, CUDADriver: m.Versions.CUDADriver, NVML: m.Versions.NVML,
		},
		MIGStrategy: cmp.Or(s.Options.MIGStrategy, deviceplugin.MIGStrategyNone),
		Layout:      v1alpha1.Layout{Config: s.NodeLabels[MIGConfigLabel], State: s.NodeLabels[MIGStateLabel]},
	}
	adv := advertisedByUUID(s.Resources)
	healthOf := map[int]health.Status{}
	for _, h := range s.Health {
		healthOf[h.Index] = h
	}
	held := map[string]bool{}
	for _, h := range s.Holders {
		id, _, _ := strings.Cut(h.DeviceID, podresources.ReplicaSeparator)
		held[id] = true
	}
	products := map[string]bool{}
	var devices, allocated, unhealthy int32
	count := func(uuid string) {
		if _, ok := adv[uuid]; !ok {
			return
		}
		devices++
		if held[uuid] {
			allocated++
		}
	}
	for _, d := range m.Devices {
		g := v1alpha1.GPU{
			Index:             int32(d.Index),
			UUID:              d.UUID,
			Product:           productName(d),
			MemoryMiB:         int64(d.MemoryMiB),
			ComputeCapability: d.ComputeCapability.String(),
			Architecture:      string(d.Architecture),
			PCIBusID:          d.PCIBusID,
			Health:            v1alpha1.Healthy,
			MIGCapable:        d.MIGCapable,
			MIGEnabled:        d.MIGEnabled,
			Sharing:           adv[d.UUID].sharing(),
		}
		if d.NUMANode >= 0 {
			g.NUMANode = ptr.To(int32(d.NUMANode))
		}
		if h, ok := healthOf[d.Index]; ok && h.State != health.Healthy {
			g.Health, g.HealthReason = v1alpha1.Unhealthy, cmp.Or(h.Reason, "unhealthy")
			unhealthy++
		}
		products[g.Product] = true
		count(d.UUID)
		migs := slices.Clone(d.MIGDevices)
		slices.SortFunc(migs, func(a, b gpu.MIGDevice) int { return a.Placement.Start - b.Placement.Start })
		for _, mg := range migs {
			g.MIGSlices = append(g.MIGSlices, v1alpha1.MIGSlice{
				UUID:              mg.UUID,
				Profile:           mg.Profile,
				GPUInstanceID:     int32(mg.GPUInstanceID),
				ComputeInstanceID: int32(mg.ComputeInstanceID),
				Placement:         v1alpha1.Placement{Start: int32(mg.Placement.Start), Size: int32(mg.Placement.Size)},
				MemoryMiB:         int64(mg.MemoryMiB),
				Multiprocessors:   int32(mg.MultiprocessorCount),
				Health:            g.Health,
				HealthReason:      g.HealthReason,
				Sharing:           adv[mg.UUID].sharing(),
			})
			count(mg.UUID)
		}
		st.GPUs = append(st.GPUs, g)
	}
	for _, f := range m.Failed {
		reason := "unreadable"
		if f.Err != nil {
			reason = f.Err.Error()
		}
		st.FailedGPUs = append(st.FailedGPUs, v1alpha1.FailedGPU{Index: int32(f.Index), UUID: f.UUID, Reason: reason})
		unhealthy++
	}
	st.Links = EncodeLinks(m.Topology)
	st.Allocations = allocations(s.Holders, s.Resources)
	st.Summary = v1alpha1.Summary{
		GPUs: int32(len(m.Devices) + len(m.Failed)),
		Product: strings.Join(slices.Sorted(func(yield func(string) bool) {
			for p := range products {
				if !yield(p) {
					return
				}
			}
		}), ","),
		Devices:          devices,
		AllocatedDevices: allocated,
		Allocation:       fmt.Sprintf("%d/%d", allocated, devices),
		UnhealthyGPUs:    unhealthy,
	}
	return st
}

// allocations groups the holders of GPU resources by pod, container and
// resource. Holders of other device plugins' resources are left out; GPU
// resources the device plugin no longer advertises (a pod from before a
// reconfiguration) stay in.
func allocations(holders []podresources.Holder, res []deviceplugin.Resource) []v1alpha1.Allocation {
	ours := map[string]bool{}
	for _, r := range res {
		ours[r.Name] = true
	}
	type key struct{ ns, pod, container, resource string }
	byKey := map[key]*v1alpha1.Allocation{}
	var out []*v1alpha1.Allocation
	for _, h := range holders {
		if !ours[h.Resource] && !strings.HasPrefix(h.Resource, "nvidia.com/") {
			continue
		}
		k := key{h.Namespace, h.Pod, h.Container, h.Resource}
		a := byKey[k]
		if a == nil {
			a = &v1alpha1.Allocation{Namespace: h.Namespace, Pod: h.Pod, Container: h.Container, Resource: h.Resource}
			byKey[k] = a
			out = append(out, a)
		}
		a.DeviceIDs = append(a.DeviceIDs, h.DeviceID)
	}
	slices.SortFunc(out, func(a, b *v1alpha1.Allocation) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod),
			cmp.Compare(a.Container, b.Container), cmp.Compare(a.Resource, b.Resource))
	})
	if len(out) == 0 {
		return nil
	}
	list := make([]v1alpha1.Allocation, len(out))
	for i, a := range out {
		slices.Sort(a.DeviceIDs)
		a.DeviceIDs = slices.Compact(a.DeviceIDs)
		list[i] = *a
	}
	return list
}

// EncodeLinks writes a topology in the compact form of
// GPUNodeStatus.Links; nil for a machine without GPUs.
func EncodeLinks(t gpu.Topology) []string {
	if len(t.Links) == 0 {
		return nil
	}
	rows := make([]string, len(t.Links))
	cells := make([]string, 0, len(t.Links))
	for i, row := range t.Links {
		cells = cells[:0]
		for j, l := range row {
			c := v1alpha1.LinkCell{Self: i == j, NVLinks: l.NVLinks, NVSwitch: l.NVSwitch && l.NVLinks > 0, PCIe: l.PCIe.String()}
			if l.PCIe == gpu.PathSame && i != j {
				c.PCIe = gpu.PathUnknown.String()
			}
			cells = append(cells, c.String())
		}
		rows[i] = strings.Join(cells, " ")
	}
	return rows
}

// DecodeLinks reads GPUNodeStatus.Links back into a topology of n GPUs.
func DecodeLinks(rows []string, n int) (gpu.Topology, error) {
	cells, err := v1alpha1.ParseLinks(rows, n)
	if err != nil {
		return gpu.Topology{}, err
	}
	t := gpu.NewTopology(n)
	for i, row := range cells {
		for j, c := range row {
			if c.Self {
				continue
			}
			path := gpu.PathUnknown
			for p := gpu.PathSingleSwitch; p <= gpu.PathUnknown; p++ {
				if p.String() == c.PCIe {
					path = p
				}
			}
			t.Links[i][j] = gpu.Link{NVLinks: c.NVLinks, NVSwitch: c.NVSwitch, PCIe: path}
		}
	}
	return t, nil
}

// productName is the GPU's name as GFD writes nvidia.com/gpu.product.
func productName(d gpu.Device) string {
	if d.Name == "" {
		return sanitise(d.Product)
	}
	return sanitise(d.Name)
}

// sanitise turns a device or profile name into a label value part the way
// GFD does: characters other than letters, digits, '-', '_', '.' and blanks
// are dropped, and runs of blanks become single dashes.
// (A regexp did this before; its pooled backtracker state stayed on the
// agent's heap between syncs.)
func sanitise(s string) string {
	kept := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.', r == ' ':
			return r
		}
		return -1
	}, s)
	return strings.Join(strings.Fields(kept), "-")
}
