package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// resMode is how a node advertises one GPU resource.
type resMode struct {
	kind scoring.Kind
	// profile is the MIG profile of a KindMIG resource.
	profile string
	// units is the most units a GPU of a KindShare resource has on the node.
	units int
}

// podRef names a pod in an allocation report.
type podRef struct {
	namespace, name string
	uid             types.UID
}

// nodeModel is one node's GPUs as its GPUNode describes them, translated into
// the scoring node model: the state with the reported allocations applied,
// the device IDs of each position (to write and compare plans), how the node
// advertises each GPU resource, and the reported allocations by pod.
type nodeModel struct {
	name  string
	state scoring.NodeState
	// gpuIDs are the GPUs' UUIDs by position; sliceIDs the MIG UUIDs by
	// position and slice.
	gpuIDs   []string
	sliceIDs [][]string
	// resources says how each advertised GPU resource maps to the model;
	// modes lists the same pairs for mode, which looks one up for every
	// feasible node of every pod (one to three entries: a scan of a slice
	// in the model beats hashing the name into a map).
	resources map[corev1.ResourceName]resMode
	modes     []resourceMode
	// shareUnits is the largest number of units any GPU of a shared resource has.
	shareUnits map[corev1.ResourceName]int
	products   []string
	profiles   []string
	heartbeat  time.Time
	// reported are the device IDs the agent reports per pod (all
	// containers and resources together), as GPU or MIG UUIDs.
	reported map[podRef][]string
	// uncountable says why counting the node's allocatable does not decide
	// whether a pod of one device, or of whole GPUs, fits ("" when it does):
	// an advertised device is unhealthy (the kubelet drops it from the
	// allocatable only at its next status update), or GPUs are advertised
	// whole beside their shares (a whole GPU taken leaves its units in the
	// allocatable). See countable.
	uncountable string
}

// buildModel translates a GPUNode. It fails, saying what is inconsistent or
// not modelled, for a status the scheduler must not trust: a link matrix
// that does not match the GPUs, a share count on a MIG GPU, shared MIG
// slices, two shared resources on one node, a resource that is both MIG and
// whole, an allocation naming a device the node does not have, or more units
// held than a GPU has.
func buildModel(gn *v1alpha1.GPUNode) (*nodeModel, error) {
	st := &gn.Status
	m := &nodeModel{
		name:       gn.Name,
		resources:  map[corev1.ResourceName]resMode{},
		shareUnits: map[corev1.ResourceName]int{},
		heartbeat:  st.HeartbeatTime.Time,
		reported:   map[podRef][]string{},
	}
	m.state.Name = gn.Name
	n := len(st.GPUs)
	cells, err := v1alpha1.ParseLinks(st.Links, n)
	if err != nil && n > 0 {
		return nil, fmt.Errorf("links: %w", err)
	}
	m.state.Topology = gpu.NewTopology(n)
	for i := range cells {
		for j, c := range cells[i] {
			if i == j {
				continue
			}
			m.state.Topology.Links[i][j] = gpu.Link{NVLinks: c.NVLinks, NVSwitch: c.NVSwitch, PCIe: pcieFromName(c.PCIe)}
		}
	}
	// Positions of GPU and MIG device IDs, and which resource each device
	// is advertised under.
	type devRef struct{ gpu, slice int }
	byID := map[string]devRef{}
	sharedRes := corev1.ResourceName("")
	for i := range st.GPUs {
		g := &st.GPUs[i]
		if i > 0 && g.Index <= st.GPUs[i-1].Index {
			return nil, fmt.Errorf("gpus: index %d after %d, want ascending indices", g.Index, st.GPUs[i-1].Index)
		}
		if g.UUID == "" || g.Product == "" {
			return nil, fmt.Errorf("gpu %d: uuid %q and product %q must be set", g.Index, g.UUID, g.Product)
		}
		sg := scoring.GPU{Product: g.Product, NUMANode: -1, Healthy: g.Health == v1alpha1.Healthy}
		if !sg.Healthy && (g.MIGEnabled || g.Sharing != nil) && m.uncountable == "" {
			m.uncountable = fmt.Sprintf("gpu %d is %s", g.Index, g.Health)
		}
		if g.NUMANode != nil {
			sg.NUMANode = int(*g.NUMANode)
		}
		byID[g.UUID] = devRef{i, -1}
		var ids []string
		switch {
		case g.MIGEnabled:
			if g.Sharing != nil {
				return nil, fmt.Errorf("gpu %d: mig is enabled and the whole gpu is advertised as %s (%d units): a mig gpu is handed out only as its slices", g.Index, g.Sharing.Resource, g.Sharing.Replicas)
			}
			sg.Mode = scoring.ModeMIG
			sg.MIGProfiles = migGeometry(g.MIGSlices)
			for _, sl := range g.MIGSlices {
				ids = append(ids, sl.UUID)
				byID[sl.UUID] = devRef{i, len(ids) - 1}
				sg.MIGSlices = append(sg.MIGSlices, scoring.MIGSlice{Profile: sl.Profile, Placement: gpu.Placement{Start: int(sl.Placement.Start), Size: int(sl.Placement.Size)}})
				if sl.Health != v1alpha1.Healthy {
					// An unhealthy slice is never handed out: model it as held.
					sg.MIGSlices[len(sg.MIGSlices)-1].Used = true
					if sl.Sharing != nil && m.uncountable == "" {
						m.uncountable = fmt.Sprintf("mig slice %s of gpu %d is %s", sl.UUID, g.Index, sl.Health)
					}
				}
				if sl.Sharing == nil {
					sg.MIGSlices[len(sg.MIGSlices)-1].Used = true // not advertised (MIG strategy none)
					continue
				}
				if sl.Sharing.Replicas > 1 || sl.Sharing.WholeResource != "" {
					return nil, fmt.Errorf("gpu %d mig slice %s: shared as %d units of %s; shared mig slices are not modelled", g.Index, sl.UUID, sl.Sharing.Replicas, sl.Sharing.Resource)
				}
				r := corev1.ResourceName(sl.Sharing.Resource)
				if old, ok := m.resources[r]; ok && (old.kind != scoring.KindMIG || old.profile != sl.Profile) {
					return nil, fmt.Errorf("resource %s is advertised both for mig slice %s and for %s", r, sl.Profile, describeMode(old))
				}
				m.resources[r] = resMode{kind: scoring.KindMIG, profile: sl.Profile}
				if !slices.Contains(m.profiles, sl.Profile) {
					m.profiles = append(m.profiles, sl.Profile)
				}
			}
		case g.Sharing == nil:
			// Not advertised (the device plugin has no configuration yet):
			// nothing can be handed out.
			sg.Healthy = false
		default:
			r := corev1.ResourceName(g.Sharing.Resource)
			if g.Sharing.Replicas > 1 {
				if sharedRes != "" && sharedRes != r {
					return nil, fmt.Errorf("gpus are shared under two resources, %s and %s; one shared resource per node is modelled", sharedRes, r)
				}
				sharedRes = r
			}
			sg.Mode, sg.ShareTotal, sg.ShareFree = scoring.ModeShared, int(g.Sharing.Replicas), int(g.Sharing.Replicas)
			m.shareUnits[r] = max(m.shareUnits[r], int(g.Sharing.Replicas))
			if w := g.Sharing.WholeResource; w != "" {
				if g.Sharing.Replicas < 2 || w == g.Sharing.Resource {
					return nil, fmt.Errorf("gpu %d: advertised whole as %s beside %d units of %s: want it beside a time-shared resource of another name", g.Index, w, g.Sharing.Replicas, r)
				}
				sg.ShareWhole = true
				if m.uncountable == "" {
					m.uncountable = fmt.Sprintf("gpu %d is advertised whole as %s beside its units of %s", g.Index, w, r)
				}
			}
		}
		m.gpuIDs = append(m.gpuIDs, g.UUID)
		m.sliceIDs = append(m.sliceIDs, ids)
		m.state.GPUs = append(m.state.GPUs, sg)
		if !slices.Contains(m.products, g.Product) {
			m.products = append(m.products, g.Product)
		}
	}
	// A resource with a GPU of more than one unit is shared on this node (its
	// one-unit GPUs are shares of one unit); otherwise it is whole.
	for i := range st.GPUs {
		g := &st.GPUs[i]
		if g.MIGEnabled || g.Sharing == nil {
			continue
		}
		r := corev1.ResourceName(g.Sharing.Resource)
		mode := resMode{kind: scoring.KindWhole}
		if r == sharedRes {
			mode = resMode{kind: scoring.KindShare, units: m.shareUnits[r]}
		} else {
			m.state.GPUs[i].Mode, m.state.GPUs[i].ShareTotal, m.state.GPUs[i].ShareFree = scoring.ModeWhole, 0, 0
			delete(m.shareUnits, r)
		}
		if old, ok := m.resources[r]; ok && old != mode {
			return nil, fmt.Errorf("resource %s is advertised both for %s and for whole or shared gpus", r, describeMode(old))
		}
		m.resources[r] = mode
		if w := corev1.ResourceName(g.Sharing.WholeResource); w != "" {
			if old, ok := m.resources[w]; ok && old.kind != scoring.KindWhole {
				return nil, fmt.Errorf("resource %s is advertised both for %s and for whole gpus", w, describeMode(old))
			}
			m.resources[w] = resMode{kind: scoring.KindWhole}
		}
	}
	// The reported allocations take their devices.
	for _, a := range st.Allocations {
		ref := podRef{namespace: a.Namespace, name: a.Pod, uid: a.PodUID}
		for _, id := range a.DeviceIDs {
			base, unit, isUnit := strings.Cut(id, "::")
			d, ok := byID[base]
			if !ok {
				return nil, fmt.Errorf("allocation of pod %s/%s container %s names device %q, which the node does not have", a.Namespace, a.Pod, a.Container, id)
			}
			sg := &m.state.GPUs[d.gpu]
			switch {
			case d.slice >= 0:
				sg.MIGSlices[d.slice].Used = true
			case sg.Mode == scoring.ModeShared && sg.ShareWhole && !isUnit:
				// The GPU is held whole (its WholeResource).
				if sg.Used || sg.ShareFree != sg.ShareTotal {
					return nil, fmt.Errorf("allocations hold gpu %s whole and %d of its %d units", base, sg.ShareTotal-sg.ShareFree, sg.ShareTotal)
				}
				sg.Used, sg.ShareFree = true, 0
			case sg.Mode == scoring.ModeShared:
				if sg.Used {
					return nil, fmt.Errorf("allocations hold gpu %s whole and units of it", base)
				}
				if _, err := strconv.Atoi(unit); isUnit && err != nil {
					return nil, fmt.Errorf("allocation of pod %s/%s names share unit %q: want <uuid>::<n>", a.Namespace, a.Pod, id)
				}
				if sg.ShareFree == 0 {
					return nil, fmt.Errorf("allocations hold more units of gpu %s than its %d", base, sg.ShareTotal)
				}
				sg.ShareFree--
			default:
				if sg.Used {
					return nil, fmt.Errorf("allocations hold whole gpu %s twice", base)
				}
				sg.Used = true
			}
			if !slices.Contains(m.reported[ref], base) {
				m.reported[ref] = append(m.reported[ref], base)
			}
		}
	}
	for ref := range m.reported {
		slices.Sort(m.reported[ref])
	}
	slices.Sort(m.products)
	slices.Sort(m.profiles)
	for r, mode := range m.resources {
		m.modes = append(m.modes, resourceMode{res: r, mode: mode})
	}
	if err := m.state.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// resourceMode is how a node advertises one resource.
type resourceMode struct {
	res  corev1.ResourceName
	mode resMode
}

func describeMode(m resMode) string {
	switch m.kind {
	case scoring.KindMIG:
		return "mig slice " + m.profile
	case scoring.KindShare:
		return "shared gpus"
	}
	return "whole gpus"
}

func pcieFromName(s string) gpu.PCIePath {
	for p := gpu.PathSingleSwitch; p <= gpu.PathUnknown; p++ {
		if p.String() == s {
			return p
		}
	}
	return gpu.PathUnknown
}

// migGeometry rebuilds a MIG GPU's profile geometry from its slices (the
// GPUNode publishes the slices that exist, not the profiles the GPU could
// make), as the agent's device plugin does (topology.SliceGeometry).
func migGeometry(sl []v1alpha1.MIGSlice) []gpu.MIGProfileInfo {
	in := make([]topology.Slice, 0, len(sl))
	for _, s := range sl {
		in = append(in, topology.Slice{Profile: s.Profile, MemoryMiB: uint64(max(s.MemoryMiB, 0)),
			Placement: gpu.Placement{Start: int(s.Placement.Start), Size: int(s.Placement.Size)}})
	}
	return topology.SliceGeometry(in)
}

// computeSlices reads the compute slices of a profile name.
func computeSlices(profile string) int { return topology.ComputeSlices(profile) }

// mode says how the node advertises resource r; a pod without GPUs (r
// empty) is KindNone on every node.
func (m *nodeModel) mode(r corev1.ResourceName) (resMode, bool) {
	if r == "" {
		return resMode{kind: scoring.KindNone}, true
	}
	for i := range m.modes {
		if m.modes[i].res == r {
			return m.modes[i].mode, true
		}
	}
	return resMode{}, false
}

// demandOn turns the pod's demand into a scoring demand for a node that
// advertises the pod's resource as mode: its GPUs, units (of GPUs of
// mode.units units) or slice, or only its CPU and memory (KindNone).
func (d *PodDemand) demandOn(mode resMode, allowed, preferred []string) (scoring.Demand, error) {
	sd := scoring.Demand{Allowed: allowed, Preferred: preferred, CPU: d.CPU, Memory: d.Memory}
	switch mode.kind {
	case scoring.KindNone:
		sd.Allowed, sd.Preferred = nil, nil
	case scoring.KindWhole:
		sd.GPUs = int(d.Count)
	case scoring.KindShare:
		sd.ShareUnits, sd.UnitsPerGPU = int(d.Count), mode.units
	case scoring.KindMIG:
		if d.Count != 1 {
			return scoring.Demand{}, fmt.Errorf("pod asks for %d mig slices of %s: %w", d.Count, mode.profile, errManySlices)
		}
		sd.MIGProfile = mode.profile
	default:
		return scoring.Demand{}, errors.New("no gpu resource")
	}
	return sd, nil
}

// errManySlices: Tessera's model gives a pod at most one MIG slice; such
// pods get no Tessera verdict and are placed by counting alone.
var errManySlices = errors.New("tessera plans one mig slice per pod")
