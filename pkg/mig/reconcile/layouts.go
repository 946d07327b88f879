package reconcile

import (
	"context"
	"fmt"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

// MIGLayouts is Layouts over pkg/mig: the mig-parted config file is read
// again for every plan, so an updated ConfigMap counts from the next label
// change on.
type MIGLayouts struct {
	// File is the mig-parted config file (a mounted ConfigMap key).
	File    string
	Applier *mig.Applier
}

var _ Layouts = MIGLayouts{}

// Plan loads the config file and plans config name against machine.
func (l MIGLayouts) Plan(_ context.Context, name string, machine *gpu.Machine) (Plan, error) {
	f, err := mig.Load(l.File)
	if err != nil {
		return nil, err
	}
	p, err := mig.NewPlan(f, name, machine)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Apply applies a plan made by Plan.
func (l MIGLayouts) Apply(ctx context.Context, p Plan) (*gpu.Machine, error) {
	mp, ok := p.(*mig.Plan)
	if !ok {
		return nil, fmt.Errorf("applying a plan of type %T: want one made by MIGLayouts.Plan", p)
	}
	return l.Applier.Apply(ctx, mp)
}

// Recover rolls back an apply the journal shows interrupted and describes
// what it did ("" when there was nothing to do).
func (l MIGLayouts) Recover(ctx context.Context) (string, error) {
	rec, err := l.Applier.Recover(ctx)
	if err != nil || rec.Empty() {
		return "", err
	}
	parts := make([]string, 0, len(rec.GPUs))
	for _, g := range rec.GPUs {
		parts = append(parts, fmt.Sprintf("gpu %d from %s back to %s", g.Index, g.Found, g.Restored))
	}
	return fmt.Sprintf("rolled back the interrupted change to mig config %q: %s", rec.Config, strings.Join(parts, "; ")), nil
}
