package mig

import (
	"errors"
	"io"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// ErrUnknownConfig is wrapped by the error for a config name the file lacks.
var ErrUnknownConfig = errors.New("unknown mig config")

// ErrInvalidLayout is wrapped by the error for a config that does not fit the machine.
var ErrInvalidLayout = errors.New("mig config does not fit this machine")

// Plan is what applying a named config to a machine changes, per GPU.
type Plan struct {
	// Config is the config name; Source the file it came from.
	Config string
	Source string
	// GPUs has one entry per discovered GPU, in index order.
	GPUs []GPUPlan
}

// GPUPlan is the plan for one GPU.
type GPUPlan struct {
	Index       int
	UUID        string
	Product     string
	PCIDeviceID uint32
	// Selected reports whether an entry of the config selects this GPU. An
	// unselected GPU is left as it is (Desired equals Current).
	Selected bool
	Current  Layout
	// Desired has explicit placements. When Current satisfies it (same mode
	// and profile counts), Desired is Current and nothing changes.
	Desired Layout
	// Destroy are the current instances to destroy, Create the instances to
	// create (with placements); instances in both layouts at the same
	// placement are kept.
	Destroy []Instance
	Create  []Instance
}

// Changed reports whether applying the plan touches this GPU.
func (g GPUPlan) Changed() bool {
	return false
}

// ModeChange reports whether the MIG mode changes.
func (g GPUPlan) ModeChange() bool {
	return false
}

// NewPlan validates config name of f against machine m and plans every GPU.
// It touches no hardware. Its error is a *PlanError listing every problem
// found (naming config, GPU, profile and reason), wrapping ErrUnknownConfig
// or ErrInvalidLayout.
func NewPlan(f *File, name string, m *gpu.Machine) (*Plan, error) {
	return nil, errNotImplemented
}

// Changed returns the plans of the GPUs that change, in index order.
func (p *Plan) Changed() []GPUPlan {
	return nil
}

// Empty reports whether the plan changes no GPU.
func (p *Plan) Empty() bool {
	return true
}

// AffectedUUIDs returns, for every GPU that changes, the GPU's UUID and the
// UUIDs of the MIG devices that will be destroyed: a pod holding any of them
// must be gone before the plan is applied. MIG devices kept as they are (same
// profile at the same placement) are not listed.
func (p *Plan) AffectedUUIDs() []string {
	return nil
}

// String renders the plan as Write does.
func (p *Plan) String() string {
	return ""
}

// Write writes a human-readable description of the plan, one block per GPU.
func (p *Plan) Write(w io.Writer) error {
	return errNotImplemented
}

// Problem is one reason a config cannot apply.
type Problem struct {
	// GPU is the GPU index, -1 when the problem is not about one GPU.
	GPU int
	// Profile is the MIG profile concerned, if any.
	Profile string
	// Reason says what is wrong.
	Reason string
}

// PlanError lists every problem found validating a config against a machine.
type PlanError struct {
	Config   string
	Source   string
	Problems []Problem
	// Unknown is set when the config name is not in the file.
	Unknown bool
}

func (e *PlanError) Error() string { return "" }

// Unwrap returns ErrUnknownConfig or ErrInvalidLayout.
func (e *PlanError) Unwrap() error {
	if e.Unknown {
		return ErrUnknownConfig
	}
	return ErrInvalidLayout
}
