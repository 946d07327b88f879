package scoring

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// GPUMode is how a GPU is handed out.
type GPUMode int

// GPU modes.
const (
	// ModeWhole hands the GPU out whole, to one pod.
	ModeWhole GPUMode = iota
	// ModeShared time-slices the GPU into ShareTotal units.
	ModeShared
	// ModeMIG partitions the GPU into MIG slices.
	ModeMIG
)

func (m GPUMode) String() string {
	switch m {
	case ModeWhole:
		return "whole"
	case ModeShared:
		return "shared"
	case ModeMIG:
		return "mig"
	}
	return fmt.Sprintf("GPUMode(%d)", int(m))
}

// MIGSlice is one existing MIG slice of a GPU.
type MIGSlice struct {
	// Profile is the canonical profile name ("1g.10gb", "3g.40gb").
	Profile   string
	Placement gpu.Placement
	// Used is true when a pod holds the slice.
	Used bool
}

// GPU is one physical GPU of a node as the placement scores see it.
type GPU struct {
	// Product is the nvidia.com/gpu.product label value ("NVIDIA-H100-80GB-HBM3").
	Product string
	// MemoryMiB is the GPU's memory (informational: scores do not use it).
	MemoryMiB int64
	// NUMANode is the host NUMA node; -1 when unknown.
	NUMANode int
	// Healthy is false for a GPU that must not get new work.
	Healthy bool
	Mode    GPUMode
	// Used is true when the GPU is handed out whole: a ModeWhole GPU, or a
	// ModeShared GPU with ShareWhole (its ShareFree is then 0).
	Used bool
	// ShareTotal and ShareFree are the time-sliced units of a ModeShared GPU.
	ShareTotal, ShareFree int
	// ShareWhole lets a ModeShared GPU whose units are all free go whole to
	// a pod that asks for whole GPUs, taking every unit: a GPU advertised
	// both whole and in shares, as every GPU of the openb traces is (a pod
	// asks for 1000 milli of K GPUs, or for part of one).
	ShareWhole bool
	// MIGProfiles is the geometry of a ModeMIG GPU (gpu.Device.MIGProfiles).
	MIGProfiles []gpu.MIGProfileInfo
	// MIGSlices are the slices that exist on a ModeMIG GPU.
	MIGSlices []MIGSlice
}

// NodeState is a node's GPU state: the input of the placement scores.
type NodeState struct {
	Name string
	// GPUs by position; Topology is indexed the same way.
	GPUs     []GPU
	Topology gpu.Topology
	// CPUFree is the free milli-CPU, MemFree the free memory in MiB.
	CPUFree, MemFree int64
}

// Validate checks that the state is consistent; errors name the node, the
// GPU position and the field at fault.
func (n *NodeState) Validate() error {
	var errs []error
	if len(n.Topology.Links) != len(n.GPUs) {
		errs = append(errs, fmt.Errorf("node %q: topology has %d gpus, the node %d", n.Name, len(n.Topology.Links), len(n.GPUs)))
	} else if err := n.Topology.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("node %q: %w", n.Name, err))
	}
	if n.CPUFree < 0 || n.MemFree < 0 {
		errs = append(errs, fmt.Errorf("node %q: free cpu %d and memory %d must not be negative", n.Name, n.CPUFree, n.MemFree))
	}
	for i := range n.GPUs {
		if err := n.GPUs[i].validate(); err != nil {
			errs = append(errs, fmt.Errorf("node %q gpu %d: %w", n.Name, i, err))
		}
	}
	return errors.Join(errs...)
}

func (g *GPU) validate() error {
	if g.Product == "" {
		return errors.New("product is empty")
	}
	switch g.Mode {
	case ModeWhole:
	case ModeShared:
		if g.ShareTotal < 1 || g.ShareFree < 0 || g.ShareFree > g.ShareTotal {
			return fmt.Errorf("shared gpu has %d of %d units free, want total >= 1 and 0 <= free <= total", g.ShareFree, g.ShareTotal)
		}
		if g.Used && (!g.ShareWhole || g.ShareFree != 0) {
			return fmt.Errorf("shared gpu is held whole with %d of %d units free and shareWhole=%t, want shareWhole and no unit free", g.ShareFree, g.ShareTotal, g.ShareWhole)
		}
	case ModeMIG:
		if len(g.MIGProfiles) == 0 {
			return errors.New("mig gpu has no mig profiles")
		}
		total := migSlices(g.MIGProfiles)
		if total < 1 || total > 64 {
			return fmt.Errorf("mig geometry spans %d memory slices, want 1 to 64", total)
		}
		var seen uint64
		for _, s := range g.MIGSlices {
			if !slices.ContainsFunc(g.MIGProfiles, func(p gpu.MIGProfileInfo) bool { return p.Name == s.Profile }) {
				return fmt.Errorf("mig slice %s at %s has a profile the gpu does not offer", s.Profile, s.Placement)
			}
			m, ok := placementMask(s.Placement, total)
			if !ok {
				return fmt.Errorf("mig slice %s at %s is outside memory slices 0 to %d", s.Profile, s.Placement, total-1)
			}
			if m&seen != 0 {
				return fmt.Errorf("mig slice %s at %s overlaps another slice", s.Profile, s.Placement)
			}
			seen |= m
		}
	default:
		return fmt.Errorf("unknown mode %d", int(g.Mode))
	}
	if g.ShareWhole && g.Mode != ModeShared {
		return fmt.Errorf("shareWhole is set on a %s gpu, want it only on a shared one", g.Mode)
	}
	return nil
}

// migSlices is the number of memory slices a MIG geometry addresses.
func migSlices(ps []gpu.MIGProfileInfo) int {
	total := 0
	for _, p := range ps {
		for _, pl := range p.Placements {
			total = max(total, pl.Start+pl.Size)
		}
	}
	return total
}

func placementMask(p gpu.Placement, total int) (uint64, bool) {
	if p.Start < 0 || p.Size < 1 || p.Start+p.Size > total {
		return 0, false
	}
	return (uint64(1)<<p.Size - 1) << p.Start, true
}

// Demand is a pod's request: at most one of GPUs, MIGProfile and ShareUnits
// is set (none for a CPU-only pod).
type Demand struct {
	// GPUs is the number of whole GPUs.
	GPUs int
	// MIGProfile asks for one MIG slice of this profile.
	MIGProfile string
	// ShareUnits asks for this many time-sliced units of one GPU.
	ShareUnits int
	// UnitsPerGPU is how many units a GPU of the shared resource asked for
	// has (the node's sharing config); 0 when unknown, read as 4. It only
	// sizes the request in GPUs for the target workload's GPU-per-CPU ratio.
	UnitsPerGPU int
	// Allowed are the products the pod may use (required nvidia.com/gpu.product
	// node affinity); empty allows every product. Preferred are the products
	// it prefers (preferred affinity).
	Allowed, Preferred []string
	// CPU is in milli-CPU, Memory in MiB.
	CPU, Memory int64
}

// Validate checks the demand; errors name the field and the allowed values.
func (d *Demand) Validate() error {
	set := 0
	if d.GPUs != 0 {
		set++
	}
	if d.MIGProfile != "" {
		set++
	}
	if d.ShareUnits != 0 {
		set++
	}
	switch {
	case set > 1:
		return fmt.Errorf("demand asks for %d gpus, mig profile %q and %d share units: want at most one of them", d.GPUs, d.MIGProfile, d.ShareUnits)
	case d.GPUs < 0:
		return fmt.Errorf("demand asks for %d gpus, want 0 or more", d.GPUs)
	case d.GPUs > 64:
		return fmt.Errorf("demand asks for %d gpus, at most 64 are supported", d.GPUs)
	case d.ShareUnits < 0:
		return fmt.Errorf("demand asks for %d share units, want 0 or more", d.ShareUnits)
	case d.UnitsPerGPU < 0:
		return fmt.Errorf("demand says a gpu has %d share units, want 0 (unknown) or more", d.UnitsPerGPU)
	case d.CPU < 0 || d.Memory < 0:
		return fmt.Errorf("demand asks for cpu %d and memory %d, want non-negative values", d.CPU, d.Memory)
	}
	for _, p := range append(slices.Clone(d.Allowed), d.Preferred...) {
		if p == "" {
			return errors.New("demand lists an empty product name")
		}
	}
	return nil
}

// Kind is the kind of GPU a demand asks for.
type Kind int

// Demand kinds.
const (
	KindNone Kind = iota
	KindWhole
	KindMIG
	KindShare
)

// Kind returns what the demand asks for.
func (d *Demand) Kind() Kind {
	switch {
	case d.GPUs > 0:
		return KindWhole
	case d.MIGProfile != "":
		return KindMIG
	case d.ShareUnits > 0:
		return KindShare
	}
	return KindNone
}
