package mig_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

// newSim opens a simulated machine ("dgx-a100") over the real NVML backend.
func newSim(t testing.TB, name string) *backend.Opened {
	t.Helper()
	b, err := backend.Open(ctx(t), "sim:"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing sim:%s: %v", name, err)
		}
	})
	return b
}

func discover(t testing.TB, b gpu.Discoverer) *gpu.Machine {
	t.Helper()
	m, err := b.Discover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Failed) > 0 {
		t.Fatalf("unreadable gpus: %+v", m.Failed)
	}
	return m
}

func mustLoad(t testing.TB, path string) *mig.File {
	t.Helper()
	f, err := mig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustParse(t testing.TB, data string) *mig.File {
	t.Helper()
	f, err := mig.Parse([]byte(data), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func mustPlan(t testing.TB, f *mig.File, name string, m *gpu.Machine) *mig.Plan {
	t.Helper()
	p, err := mig.NewPlan(f, name, m)
	if err != nil {
		t.Fatalf("NewPlan(%s): %v", name, err)
	}
	return p
}

// layouts returns the layout of every GPU of m, by index.
func layouts(m *gpu.Machine) map[int]mig.Layout {
	out := map[int]mig.Layout{}
	for _, d := range m.Devices {
		out[d.Index] = mig.LayoutOf(d)
	}
	return out
}

// sameLayouts reports whether two machines' GPUs have the same mode and
// instances (profile and placement) GPU by GPU.
func sameLayouts(a, b map[int]mig.Layout) bool {
	if !slices.Equal(slices.Sorted(maps.Keys(a)), slices.Sorted(maps.Keys(b))) {
		return false
	}
	for i, l := range a {
		if !l.Matches(b[i]) {
			return false
		}
	}
	return true
}

// wantCounts is what config name of f asks of each GPU of m, read from the
// config directly: the profile counts of the entry selecting the GPU, and
// whether MIG is on. GPUs no entry selects are absent.
func wantCounts(f *mig.File, name string, m *gpu.Machine) map[int]mig.Layout {
	out := map[int]mig.Layout{}
	for _, e := range f.Configs[name] {
		for _, d := range m.Devices {
			if !e.Devices.Selects(d.Index) || !e.DeviceFilter.Matches(d.PCIDeviceID) {
				continue
			}
			l := mig.Layout{MIGEnabled: e.MIGEnabled}
			for _, p := range slices.Sorted(maps.Keys(e.MIGDevices)) {
				for range e.MIGDevices[p] {
					l.Instances = append(l.Instances, mig.Instance{Profile: p})
				}
			}
			out[d.Index] = l
		}
	}
	return out
}

// ctx returns a context whose logger writes to the test's log.
func ctx(t testing.TB) context.Context {
	_, c := ktesting.NewTestContext(t)
	return c
}
