package mig

import (
	"context"
	"errors"

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
// touched back to its previous layout on any failure.
type Applier struct {
	b           Backend
	journalPath string
}

// NewApplier returns an applier over b. journalPath is the file that records
// an apply in progress (written atomically before each GPU is touched, removed
// when the apply ends, successful or rolled back); empty disables the journal.
func NewApplier(b Backend, journalPath string) *Applier {
	return &Applier{b: b, journalPath: journalPath}
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
func (a *Applier) Apply(ctx context.Context, p *Plan) (*gpu.Machine, error) {
	return nil, errNotImplemented
}

// Recover rolls back an apply that the journal shows was interrupted (the
// agent died mid-apply): every GPU it recorded goes back to its previous
// layout, and the journal is removed. It reports what it did; with no journal
// it does nothing.
func (a *Applier) Recover(ctx context.Context) (Recovered, error) {
	return Recovered{}, errNotImplemented
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
}

// Empty reports whether there was nothing to recover.
func (r Recovered) Empty() bool { return len(r.GPUs) == 0 }

// ApplyError is why Apply failed.
type ApplyError struct {
	Config string
	// GPU is the index of the GPU whose step failed, -1 when the failure was
	// not about one GPU (discovery).
	GPU  int
	UUID string
	// Step is what failed: "destroying 1g.5gb at 3", "enabling mig", ...
	Step string
	Err  error
	// RolledBack lists the GPUs restored to their previous layout.
	RolledBack []int
	// RollbackErr is why the rollback failed; Left the layouts it left then.
	RollbackErr error
	Left        map[int]Layout
}

func (e *ApplyError) Error() string { return "" }

// Unwrap returns the failure (errors.Is(err, gpu.ErrResetRequired) works).
func (e *ApplyError) Unwrap() error { return e.Err }
