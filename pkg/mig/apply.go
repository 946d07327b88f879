package mig

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Backend is what the applier needs of a GPU backend.
type Backend interface {
	gpu.Discoverer
	gpu.MIGManager
}

// ErrJournalPending is wrapped by Apply's error when the journal holds an
// apply that was interrupted and not yet recovered (run Recover first).
var ErrJournalPending = errors.New("an interrupted mig apply is pending recovery")

// Applier applies plans to a backend, one GPU at a time, rolling every GPU it
// touched back to its previous layout on any failure. It is not safe for
// concurrent use: one apply or recovery at a time.
type Applier struct {
	b       Backend
	journal journal
}

// NewApplier returns an applier over b. journalPath is the file that records
// an apply in progress (written atomically before each GPU is touched, removed
// when the apply ends, successful or rolled back); empty disables the journal.
func NewApplier(b Backend, journalPath string) *Applier {
	return &Applier{b: b, journal: journal{path: journalPath}}
}

// Apply brings every GPU of p to its desired layout: per GPU, destroy the
// instances that go, change the MIG mode, create the instances that come, with
// explicit placements. It works from the GPUs' state at call time, so it is
// idempotent: a GPU already in its desired layout is not touched. On any
// failure every GPU it touched is rolled back to its previous layout and the
// error (an *ApplyError) says what failed and whether the rollback worked. A
// mode change that needs a GPU reset fails with an error wrapping
// gpu.ErrResetRequired; it is not retried. It returns the machine rediscovered
// after the apply.
//
// Apply refuses to start, with an error wrapping ErrJournalPending, while the
// journal holds an interrupted apply: run Recover first.
func (a *Applier) Apply(ctx context.Context, p *Plan) (*gpu.Machine, error) {
	logger := klog.FromContext(ctx).WithValues("config", p.Config)
	pending, err := a.journal.read()
	if err != nil {
		return nil, err
	}
	if pending != nil {
		return nil, fmt.Errorf("applying mig config %q: %w (journal %s, config %q on gpus %v): recover first",
			p.Config, ErrJournalPending, a.journal.path, pending.Config, pending.indices())
	}
	m, err := a.b.Discover(ctx)
	if err != nil {
		return nil, &ApplyError{Config: p.Config, GPU: -1, Step: "discovering gpus", Err: err}
	}
	rec := &journalRecord{Version: journalVersion, Config: p.Config}
	for _, g := range p.Changed() {
		d, err := deviceOf(m, g.Index, g.UUID)
		if err != nil {
			return nil, a.fail(ctx, rec, &ApplyError{Config: p.Config, GPU: g.Index, UUID: g.UUID, Step: "reading the gpu", Err: err})
		}
		actual := LayoutOf(d)
		if actual.Satisfies(g.Desired) {
			logger.V(2).Info("GPU already in the desired MIG layout", "gpu", g.Index, "uuid", g.UUID, "layout", actual.String())
			continue
		}
		rec.GPUs = append(rec.GPUs, journalGPU{Index: g.Index, UUID: g.UUID, Previous: actual, Desired: g.Desired})
		if err := a.journal.write(rec); err != nil {
			rec.GPUs = rec.GPUs[:len(rec.GPUs)-1]
			return nil, a.fail(ctx, rec, &ApplyError{Config: p.Config, GPU: g.Index, UUID: g.UUID, Step: "writing the journal", Err: err})
		}
		logger.Info("Applying MIG layout", "gpu", g.Index, "uuid", g.UUID, "from", actual.String(), "to", g.Desired.String())
		if err := a.converge(ctx, g.Index, actual, g.Desired); err != nil {
			ae := &ApplyError{Config: p.Config, GPU: g.Index, UUID: g.UUID, Err: err}
			if se := (*stepError)(nil); errors.As(err, &se) {
				ae.Step, ae.Err = se.step, se.err
			}
			return nil, a.fail(ctx, rec, ae)
		}
	}
	after, err := a.b.Discover(ctx)
	if err != nil {
		return nil, a.fail(ctx, rec, &ApplyError{Config: p.Config, GPU: -1, Step: "rediscovering gpus after the apply", Err: err})
	}
	for _, e := range rec.GPUs {
		d, err := deviceOf(after, e.Index, e.UUID)
		if err == nil && (!LayoutOf(d).Matches(e.Desired) || d.MIGPendingEnabled != d.MIGEnabled) {
			err = fmt.Errorf("gpu %d has %s, want %s", e.Index, LayoutOf(d), e.Desired)
		}
		if err != nil {
			return nil, a.fail(ctx, rec, &ApplyError{Config: p.Config, GPU: e.Index, UUID: e.UUID, Step: "verifying the new layout", Err: err})
		}
	}
	if err := a.journal.clear(); err != nil {
		return after, fmt.Errorf("applied mig config %q but could not clear the journal: %w", p.Config, err)
	}
	if len(rec.GPUs) > 0 {
		logger.Info("Applied MIG config", "gpus", rec.indices())
	}
	return after, nil
}

// fail rolls back every GPU of rec (those the apply touched) and completes ae
// with the outcome. The rollback runs even if ctx is done: leaving half a
// layout is worse than overrunning a deadline by a few NVML calls.
func (a *Applier) fail(ctx context.Context, rec *journalRecord, ae *ApplyError) error {
	logger := klog.FromContext(ctx).WithValues("config", rec.Config)
	logger.Error(ae.Err, "MIG apply failed; rolling back", "gpu", ae.GPU, "step", ae.Step, "touched", rec.indices())
	if len(rec.GPUs) == 0 {
		return ae
	}
	rctx := context.WithoutCancel(ctx)
	left, _, err := a.rollback(rctx, rec)
	if err != nil {
		ae.RollbackErr, ae.Left = err, left
		logger.Error(err, "Rolling back the MIG apply failed; the journal keeps it for recovery", "journal", a.journal.path)
		return ae
	}
	for _, e := range rec.GPUs {
		ae.RolledBack = append(ae.RolledBack, e.Index)
	}
	if err := a.journal.clear(); err != nil {
		ae.RollbackErr = err
	}
	return ae
}

// rollback brings every GPU of rec back to its previous layout, last touched
// first, and returns the layouts found afterwards.
//
// A GPU no longer on the machine (its index gone, or another GPU at it) is
// skipped and returned in gone: there is nothing left to restore on it, and
// keeping the journal for it would block every later apply.
func (a *Applier) rollback(ctx context.Context, rec *journalRecord) (left map[int]Layout, gone []int, _ error) {
	m, err := a.b.Discover(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("discovering gpus to roll back: %w", err)
	}
	var errs []error
	for _, e := range slices.Backward(rec.GPUs) {
		d, err := deviceOf(m, e.Index, e.UUID)
		if errors.Is(err, gpu.ErrUnknownDevice) {
			klog.FromContext(ctx).Info("GPU to roll back is gone; skipping it", "gpu", e.Index, "uuid", e.UUID, "reason", err.Error())
			gone = append(gone, e.Index)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		actual := LayoutOf(d)
		if err := a.sweep(ctx, e.Index, actual, e.Previous); err != nil {
			errs = append(errs, err)
		}
		if actual.Matches(e.Previous) && !actual.MIGPendingReset {
			continue
		}
		if err := a.converge(ctx, e.Index, actual, e.Previous); err != nil {
			errs = append(errs, fmt.Errorf("restoring gpu %d to %s: %w", e.Index, e.Previous, err))
		}
	}
	after, err := a.b.Discover(ctx)
	if err != nil {
		return nil, gone, errors.Join(append(errs, fmt.Errorf("rediscovering gpus after the rollback: %w", err))...)
	}
	left = map[int]Layout{}
	for _, e := range rec.GPUs {
		if slices.Contains(gone, e.Index) {
			continue
		}
		d, err := deviceOf(after, e.Index, e.UUID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l := LayoutOf(d)
		left[e.Index] = l
		if !l.Matches(e.Previous) {
			errs = append(errs, fmt.Errorf("gpu %d has %s after the rollback, want %s", e.Index, l, e.Previous))
		}
	}
	return left, gone, errors.Join(errs...)
}

// sweep destroys what is left of the GPU instances of the previous layout
// that discovery no longer shows: a destroy that failed between the compute
// instance and the GPU instance leaves a GPU instance with no compute
// instance, which holds its slices but is no MIG device.
func (a *Applier) sweep(ctx context.Context, index int, actual, previous Layout) error {
	if !actual.MIGEnabled {
		return nil
	}
	var errs []error
	for _, in := range previous.Instances {
		if slices.ContainsFunc(actual.Instances, func(x Instance) bool { return x.GPUInstanceID == in.GPUInstanceID }) {
			continue
		}
		err := a.b.DestroyMIGDevice(ctx, index, in.GPUInstanceID)
		switch {
		case err == nil:
			klog.FromContext(ctx).Info("Destroyed a GPU instance left without compute instance", "gpu", index, "gpuInstance", in.GPUInstanceID)
		case !errors.Is(err, gpu.ErrUnknownDevice):
			errs = append(errs, fmt.Errorf("destroying what is left of gpu instance %d (%s) on gpu %d: %w", in.GPUInstanceID, in, index, err))
		}
	}
	return errors.Join(errs...)
}

// Recover rolls back an apply that the journal shows was interrupted (the
// agent died mid-apply): every GPU it recorded goes back to its previous
// layout, and the journal is removed. It reports what it did; with no journal
// it does nothing. When the rollback fails the journal stays, for the next
// Recover.
func (a *Applier) Recover(ctx context.Context) (Recovered, error) {
	rec, err := a.journal.read()
	if err != nil || rec == nil {
		return Recovered{}, err
	}
	logger := klog.FromContext(ctx).WithValues("config", rec.Config)
	logger.Info("Rolling back an interrupted MIG apply", "journal", a.journal.path, "gpus", rec.indices())
	out := Recovered{Config: rec.Config}
	m, err := a.b.Discover(ctx)
	if err != nil {
		return out, fmt.Errorf("recovering the interrupted mig apply of config %q: discovering gpus: %w", rec.Config, err)
	}
	for _, e := range rec.GPUs {
		found := Layout{}
		if d, err := deviceOf(m, e.Index, e.UUID); err == nil {
			found = LayoutOf(d)
		}
		out.GPUs = append(out.GPUs, RecoveredGPU{Index: e.Index, UUID: e.UUID, Found: found, Restored: e.Previous})
	}
	_, gone, err := a.rollback(ctx, rec)
	for i := range out.GPUs {
		out.GPUs[i].Gone = slices.Contains(gone, out.GPUs[i].Index)
	}
	if err != nil {
		return out, fmt.Errorf("recovering the interrupted mig apply of config %q (journal %s): %w", rec.Config, a.journal.path, err)
	}
	if err := a.journal.clear(); err != nil {
		return out, err
	}
	for _, g := range out.GPUs {
		if !g.Gone {
			logger.Info("Rolled back GPU", "gpu", g.Index, "uuid", g.UUID, "found", g.Found.String(), "restored", g.Restored.String())
		}
	}
	return out, nil
}

// deviceOf returns GPU index of m, checking it is still the GPU with uuid.
func deviceOf(m *gpu.Machine, index int, uuid string) (gpu.Device, error) {
	for _, d := range m.Devices {
		if d.Index != index {
			continue
		}
		if uuid != "" && d.UUID != uuid {
			return gpu.Device{}, fmt.Errorf("gpu %d is now %s, not %s: %w", index, d.UUID, uuid, gpu.ErrUnknownDevice)
		}
		return d, nil
	}
	for _, f := range m.Failed {
		if f.Index == index {
			return gpu.Device{}, fmt.Errorf("gpu %d could not be read: %w", index, f.Err)
		}
	}
	return gpu.Device{}, fmt.Errorf("gpu %d: %w", index, gpu.ErrUnknownDevice)
}

// step is one change converge makes.
type step struct {
	kind   stepKind
	inst   Instance
	enable bool
}

type stepKind int

const (
	stepDestroy stepKind = iota
	stepMode
	stepCreate
)

func (s step) describe() string {
	switch s.kind {
	case stepDestroy:
		if s.inst.UUID != "" {
			return fmt.Sprintf("destroy %s (gpu instance %d, %s)", s.inst, s.inst.GPUInstanceID, s.inst.UUID)
		}
		return fmt.Sprintf("destroy %s (gpu instance %d)", s.inst, s.inst.GPUInstanceID)
	case stepMode:
		if s.enable {
			return "enable mig"
		}
		return "disable mig"
	}
	return "create " + s.inst.String()
}

// steps lists the changes from one layout to another, in the order they are
// made: destroy the instances that go, set the MIG mode, create the instances
// that come. Instances at the same place in both stay.
func steps(from, to Layout) []step {
	var out []step
	destroy, create := diff(from, to)
	seen := map[int]bool{}
	for _, in := range destroy {
		if seen[in.GPUInstanceID] {
			continue // a second compute instance of the same gpu instance
		}
		seen[in.GPUInstanceID] = true
		out = append(out, step{kind: stepDestroy, inst: in})
	}
	if from.MIGEnabled != to.MIGEnabled || from.MIGPendingReset {
		out = append(out, step{kind: stepMode, enable: to.MIGEnabled})
	}
	if to.MIGEnabled {
		for _, in := range create {
			out = append(out, step{kind: stepCreate, inst: in})
		}
	}
	return out
}

// stepError is a failed step.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// converge changes GPU index from layout from (as discovered) to layout to.
func (a *Applier) converge(ctx context.Context, index int, from, to Layout) error {
	logger := klog.FromContext(ctx).WithValues("gpu", index)
	for _, s := range steps(from, to) {
		var err error
		switch s.kind {
		case stepDestroy:
			err = a.b.DestroyMIGDevice(ctx, index, s.inst.GPUInstanceID)
		case stepMode:
			err = a.b.SetMIGMode(ctx, index, s.enable)
		case stepCreate:
			_, err = a.b.CreateMIGDevice(ctx, index, s.inst.Profile, s.inst.Placement.Start)
		}
		if err != nil {
			return &stepError{step: fmt.Sprintf("%s on gpu %d", s.describe(), index), err: err}
		}
		logger.V(2).Info("MIG step done", "step", s.describe())
	}
	return nil
}

// Recovered is what Recover did.
type Recovered struct {
	// Config is the config the interrupted apply was applying.
	Config string
	// GPUs are the GPUs rolled back.
	GPUs []RecoveredGPU
}

// RecoveredGPU is one GPU Recover rolled back.
type RecoveredGPU struct {
	Index int
	UUID  string
	// Found is the layout the GPU had at recovery; Restored the previous
	// layout it was brought back to.
	Found, Restored Layout
	// Gone is set when the GPU is no longer on the machine (or another GPU
	// has its index): it was skipped.
	Gone bool
}

// Empty reports whether there was nothing to recover.
func (r Recovered) Empty() bool { return len(r.GPUs) == 0 }

// String describes what was recovered.
func (r Recovered) String() string {
	if r.Empty() {
		return "no interrupted mig apply"
	}
	parts := make([]string, len(r.GPUs))
	for i, g := range r.GPUs {
		if g.Gone {
			parts[i] = fmt.Sprintf("gpu %d (%s) is gone, skipped", g.Index, g.UUID)
			continue
		}
		parts[i] = fmt.Sprintf("gpu %d from %s back to %s", g.Index, g.Found, g.Restored)
	}
	return fmt.Sprintf("rolled back the interrupted apply of mig config %q: %s", r.Config, strings.Join(parts, "; "))
}

// ApplyError is why Apply failed.
type ApplyError struct {
	Config string
	// GPU is the index of the GPU whose step failed, -1 when the failure was
	// not about one GPU (discovery).
	GPU  int
	UUID string
	// Step is what failed: "destroy 1g.5gb@3 (gpu instance 5) on gpu 0",
	// "enable mig on gpu 2", "verifying the new layout", ...
	Step string
	Err  error
	// RolledBack lists the GPUs restored to their previous layout.
	RolledBack []int
	// RollbackErr is why the rollback failed; Left the layouts it left then.
	RollbackErr error
	Left        map[int]Layout
}

func (e *ApplyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "applying mig config %q: %s: %v", e.Config, e.Step, e.Err)
	if errors.Is(e.Err, gpu.ErrResetRequired) {
		b.WriteString(" (the node cannot reset the gpu; not retried)")
	}
	switch {
	case e.RollbackErr != nil:
		fmt.Fprintf(&b, "; rollback failed: %v", e.RollbackErr)
		if len(e.Left) > 0 {
			idx := slices.Sorted(maps.Keys(e.Left))
			parts := make([]string, len(idx))
			for k, i := range idx {
				parts[k] = fmt.Sprintf("gpu %d: %s", i, e.Left[i])
			}
			fmt.Fprintf(&b, "; left: %s", strings.Join(parts, ", "))
		}
	case len(e.RolledBack) > 0:
		fmt.Fprintf(&b, "; rolled back gpus %v to their previous layout", e.RolledBack)
	default:
		b.WriteString("; no gpu was changed")
	}
	return b.String()
}

// Unwrap returns the failure (errors.Is(err, gpu.ErrResetRequired) works).
func (e *ApplyError) Unwrap() error { return e.Err }
