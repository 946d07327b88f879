package scoring

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// NodeSpec is a node in plain data, as an inventory describes it: what a
// scheduler adapter reads from a GPUNode (GPUs, MIG slices, sharing, link
// matrix, the devices running pods hold) and the Node's allocatable CPU and
// memory, and what the trace replay builds from a trace row. NewNodeState
// turns it into the NodeState the scores take, so that every source of
// nodes goes through one model.
type NodeSpec struct {
	Name string
	// CPU is the node's allocatable milli-CPU, Memory its allocatable MiB.
	CPU, Memory int64
	GPUs        []GPUSpec
	// Links is the GPUs' link matrix, indexed like GPUs (symmetric, PathSame
	// on the diagonal); nil when unknown: every pair is PathUnknown, so the
	// interconnect scores see no difference between sets and keep nothing.
	Links [][]gpu.Link
	// Allocations are the devices, CPU and memory running pods hold.
	Allocations []Allocation
}

// GPUSpec is one physical GPU of a NodeSpec.
type GPUSpec struct {
	// Product is the nvidia.com/gpu.product label value.
	Product   string
	MemoryMiB int64
	// NUMANode is the host NUMA node; -1 when unknown.
	NUMANode int
	Healthy  bool
	// ShareUnits > 0 time-shares the GPU into that many units (the
	// sharing config's replicas); ShareWhole lets it also go whole while
	// every unit is free (GPU.ShareWhole).
	ShareUnits int
	ShareWhole bool
	// MIGEnabled puts the GPU in MIG mode: MIGProfiles is its geometry,
	// MIGSlices the slices that exist.
	MIGEnabled  bool
	MIGProfiles []gpu.MIGProfileInfo
	MIGSlices   []MIGSliceSpec
}

// MIGSliceSpec is one existing MIG slice.
type MIGSliceSpec struct {
	Profile   string
	Placement gpu.Placement
}

// Allocation is what one running pod holds on the node.
type Allocation struct {
	// CPU is in milli-CPU, Memory in MiB.
	CPU, Memory int64
	// GPUs are the positions of the GPUs the pod holds whole.
	GPUs []int
	// Shares are the units it holds on shared GPUs.
	Shares []ShareAllocation
	// MIG are the MIG slices it holds.
	MIG []MIGAllocation
}

// ShareAllocation is Units share units of the GPU at position GPU.
type ShareAllocation struct{ GPU, Units int }

// MIGAllocation is the slice at Placement of the GPU at position GPU.
type MIGAllocation struct {
	GPU       int
	Placement gpu.Placement
}

// NewNodeState builds the node's state: the GPUs with their modes, the
// allocations applied (whole GPUs used, units and slices taken, CPU and
// memory subtracted), then validated. Errors name the node, the GPU or the
// allocation at fault, and the field.
func NewNodeState(spec NodeSpec) (NodeState, error) {
	st := NodeState{Name: spec.Name, CPUFree: spec.CPU, MemFree: spec.Memory}
	if spec.Links == nil {
		st.Topology = gpu.NewTopology(len(spec.GPUs))
	} else {
		st.Topology = gpu.Topology{Links: spec.Links}
	}
	for i, gs := range spec.GPUs {
		g := GPU{Product: gs.Product, MemoryMiB: gs.MemoryMiB, NUMANode: gs.NUMANode, Healthy: gs.Healthy}
		switch {
		case gs.MIGEnabled && gs.ShareUnits > 0:
			return NodeState{}, fmt.Errorf("node %q gpu %d: mig enabled and shared into %d units, want one of them", spec.Name, i, gs.ShareUnits)
		case gs.MIGEnabled:
			g.Mode, g.MIGProfiles = ModeMIG, gs.MIGProfiles
			for _, sl := range gs.MIGSlices {
				g.MIGSlices = append(g.MIGSlices, MIGSlice{Profile: sl.Profile, Placement: sl.Placement})
			}
		case gs.ShareUnits > 0:
			g.Mode, g.ShareTotal, g.ShareFree, g.ShareWhole = ModeShared, gs.ShareUnits, gs.ShareUnits, gs.ShareWhole
		case gs.ShareUnits < 0:
			return NodeState{}, fmt.Errorf("node %q gpu %d: %d share units, want 0 (not shared) or more", spec.Name, i, gs.ShareUnits)
		case gs.ShareWhole:
			return NodeState{}, fmt.Errorf("node %q gpu %d: shareWhole on a gpu that is not shared", spec.Name, i)
		}
		st.GPUs = append(st.GPUs, g)
	}
	var errs []error
	for ai, a := range spec.Allocations {
		if err := st.allocate(a); err != nil {
			errs = append(errs, fmt.Errorf("node %q allocation %d: %w", spec.Name, ai, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return NodeState{}, err
	}
	if err := st.Validate(); err != nil {
		return NodeState{}, err
	}
	return st, nil
}

// allocate applies one allocation to a state being built.
func (n *NodeState) allocate(a Allocation) error {
	at := func(g int) (*GPU, error) {
		if g < 0 || g >= len(n.GPUs) {
			return nil, fmt.Errorf("gpu position %d, the node has %d gpus", g, len(n.GPUs))
		}
		return &n.GPUs[g], nil
	}
	if a.CPU < 0 || a.Memory < 0 {
		return fmt.Errorf("cpu %d and memory %d, want non-negative values", a.CPU, a.Memory)
	}
	for _, gi := range a.GPUs {
		g, err := at(gi)
		if err != nil {
			return err
		}
		switch {
		case g.Mode == ModeWhole && !g.Used:
		case g.Mode == ModeShared && g.ShareWhole && !g.Used && g.ShareFree == g.ShareTotal:
			g.ShareFree = 0
		default:
			return fmt.Errorf("gpu %d is held whole, but it is %s (used=%t, %d of %d units free)", gi, g.Mode, g.Used, g.ShareFree, g.ShareTotal)
		}
		g.Used = true
	}
	for _, sh := range a.Shares {
		g, err := at(sh.GPU)
		if err != nil {
			return err
		}
		if g.Mode != ModeShared || sh.Units < 1 || sh.Units > g.ShareFree {
			return fmt.Errorf("%d units of gpu %d are held, but it is %s with %d of %d units free", sh.Units, sh.GPU, g.Mode, g.ShareFree, g.ShareTotal)
		}
		g.ShareFree -= sh.Units
	}
	for _, m := range a.MIG {
		g, err := at(m.GPU)
		if err != nil {
			return err
		}
		j := slices.IndexFunc(g.MIGSlices, func(s MIGSlice) bool { return s.Placement == m.Placement })
		if g.Mode != ModeMIG || j < 0 || g.MIGSlices[j].Used {
			return fmt.Errorf("the mig slice at %s of gpu %d is held, but the gpu (%s) has no free slice there", m.Placement, m.GPU, g.Mode)
		}
		g.MIGSlices[j].Used = true
	}
	n.CPUFree -= a.CPU
	n.MemFree -= a.Memory
	return nil
}

// SpecFromMachine describes a node whose GPUs are m's (a discovered
// machine: real, or simulated by pkg/gpu/sim), all healthy, with cpu
// milli-CPU and mem MiB allocatable and nothing allocated: a GPU with MIG
// enabled is in MIG mode with its MIG devices as slices, every other GPU is
// whole. Set ShareUnits (and ShareWhole) for time-shared GPUs, as the
// device plugin's sharing config does, and Allocations for running pods.
func SpecFromMachine(name string, m *gpu.Machine, cpu, mem int64) NodeSpec {
	spec := NodeSpec{Name: name, CPU: cpu, Memory: mem, Links: m.Topology.Links}
	for _, d := range m.Devices {
		g := GPUSpec{Product: d.Product, MemoryMiB: int64(d.MemoryMiB), NUMANode: d.NUMANode, Healthy: true}
		if d.MIGEnabled {
			g.MIGEnabled, g.MIGProfiles = true, d.MIGProfiles
			for _, md := range d.MIGDevices {
				g.MIGSlices = append(g.MIGSlices, MIGSliceSpec{Profile: md.Profile, Placement: md.Placement})
			}
		}
		spec.GPUs = append(spec.GPUs, g)
	}
	return spec
}
