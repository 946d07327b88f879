package deviceplugin_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// machine discovers a built-in simulated machine after applying layout, a map
// from GPU index to the MIG profiles to create on it (first free placements).
func machine(t testing.TB, name string, layout map[int][]string) *gpu.Machine {
	t.Helper()
	m, err := sim.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nvmlbackend.New(m.NVML())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for idx, profiles := range layout {
		gputest.FillMIG(t, b, idx, profiles...)
	}
	ctx := context.Background()
	mach, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return mach
}

// sameLayout gives every listed GPU the same MIG profiles.
func sameLayout(gpus []int, profiles ...string) map[int][]string {
	out := map[int][]string{}
	for _, g := range gpus {
		out[g] = profiles
	}
	return out
}

func upTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// fakeHealth is a settable HealthSource.
type fakeHealth struct {
	mu        sync.Mutex
	unhealthy map[string]bool
}

func (h *fakeHealth) Healthy(uuid string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.unhealthy[uuid]
}

func (h *fakeHealth) set(uuid string, healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unhealthy == nil {
		h.unhealthy = map[string]bool{}
	}
	h.unhealthy[uuid] = !healthy
}
