package gputest

import (
	"context"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// MIGBackend is what FillMIG needs of a backend.
type MIGBackend interface {
	SetMIGMode(ctx context.Context, index int, enabled bool) error
	MIGProfiles(ctx context.Context, index int) ([]gpu.MIGProfileInfo, error)
	CreateMIGDevice(ctx context.Context, index int, profile string, start int) (gpu.MIGDevice, error)
}

// FillMIG enables MIG on GPU index and creates the profiles, in order, each at
// its first legal placement that is still free. It is a fixture builder for
// tests, not the layout planner.
func FillMIG(t testing.TB, b MIGBackend, index int, profiles ...string) {
	t.Helper()
	ctx := context.Background()
	if err := b.SetMIGMode(ctx, index, true); err != nil {
		t.Fatalf("enabling MIG on gpu %d: %v", index, err)
	}
	ps, err := b.MIGProfiles(ctx, index)
	if err != nil {
		t.Fatalf("listing MIG profiles of gpu %d: %v", index, err)
	}
	var used []gpu.Placement
next:
	for _, name := range profiles {
		for _, p := range ps {
			if p.Name != name {
				continue
			}
			for _, pl := range p.Placements {
				if overlapsAny(pl, used) {
					continue
				}
				if _, err := b.CreateMIGDevice(ctx, index, name, pl.Start); err != nil {
					t.Fatalf("creating %s at %d on gpu %d: %v", name, pl.Start, index, err)
				}
				used = append(used, pl)
				continue next
			}
		}
		t.Fatalf("no free placement for %s on gpu %d", name, index)
	}
}

func overlapsAny(p gpu.Placement, used []gpu.Placement) bool {
	for _, u := range used {
		if p.Overlaps(u) {
			return true
		}
	}
	return false
}
