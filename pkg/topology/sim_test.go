package topology_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// simBackend opens a built-in simulated machine behind the NVML backend.
func simBackend(t *testing.T, name string) *nvmlbackend.Backend {
	t.Helper()
	m, err := sim.Open(name)
	if err != nil {
		t.Fatalf("sim.Open(%q): %v", name, err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:"+name))
	if err != nil {
		t.Fatalf("nvmlbackend.New(sim:%s): %v", name, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func discover(t *testing.T, b *nvmlbackend.Backend) *gpu.Machine {
	t.Helper()
	m, err := b.Discover(context.Background())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	return m
}

// TestFixturesMatchSimulatedMachines checks that the hand-built topologies of
// the other tests are the ones Tessera discovers on the simulated machines.
func TestFixturesMatchSimulatedMachines(t *testing.T) {
	for _, tc := range []struct {
		machine string
		node    *node
	}{
		{machine: "dgx-h100", node: dgxH100()},
		{machine: "pcie-4xl40s", node: l40s()},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			m := discover(t, simBackend(t, tc.machine))
			for i, d := range m.Devices {
				if d.NUMANode != tc.node.numa[i] {
					t.Errorf("gpu %d: numa node %d, fixture has %d", i, d.NUMANode, tc.node.numa[i])
				}
				for j := range m.Devices {
					if got, want := m.Topology.Between(i, j), tc.node.t.Between(i, j); got != want {
						t.Errorf("link %d-%d: discovered %+v, fixture has %+v", i, j, got, want)
					}
				}
			}
		})
	}
}

func TestAllocateOnSimulatedMachines(t *testing.T) {
	all8 := span(0, 7)
	tests := []struct {
		name        string
		machine     string
		free        []int
		mustInclude []int
		k           int
		want        []int
	}{
		{name: "2 of 8 picks a pcie switch pair", machine: "dgx-h100", free: all8, k: 2, want: []int{0, 1}},
		{name: "4 of 8 picks one numa node", machine: "dgx-h100", free: all8, k: 4, want: []int{0, 1, 2, 3}},
		{name: "a pair that keeps numa node 0 whole", machine: "dgx-h100", free: span(0, 5), k: 2, want: []int{4, 5}},
		{name: "fragmented: 1 gpu picks an orphan", machine: "dgx-h100", free: []int{0, 1, 2, 4, 5, 6}, k: 1, want: []int{2}},
		{name: "mustInclude 6 gets its switch partner", machine: "dgx-h100", free: all8, mustInclude: []int{6}, k: 2, want: []int{6, 7}},

		{name: "2 of 8 picks an nvlink pair", machine: "pcie-8xa100-80gb", free: all8, k: 2, want: []int{0, 1}},
		{name: "free {1,2,3}, 2 picks {2,3}", machine: "pcie-8xa100-80gb", free: []int{1, 2, 3}, k: 2, want: []int{2, 3}},
		{name: "4 of 8 picks two pairs on one numa node", machine: "pcie-8xa100-80gb", free: all8, k: 4, want: []int{0, 1, 2, 3}},
		{name: "1 gpu picks the orphan", machine: "pcie-8xa100-80gb", free: []int{0, 1, 2, 3, 5, 6, 7}, k: 1, want: []int{5}},

		{name: "2 of 4 picks a same-numa pair", machine: "pcie-4xl40s", free: span(0, 3), k: 2, want: []int{0, 1}},
		{name: "free {1,2,3}, 2 picks {2,3}", machine: "pcie-4xl40s", free: []int{1, 2, 3}, k: 2, want: []int{2, 3}},
	}
	allocators := map[string]*topology.Allocator{}
	for _, tc := range tests {
		t.Run(tc.machine+": "+tc.name, func(t *testing.T) {
			a := allocators[tc.machine]
			if a == nil {
				var err error
				if a, err = topology.ForMachine(discover(t, simBackend(t, tc.machine))); err != nil {
					t.Fatalf("ForMachine: %v", err)
				}
				allocators[tc.machine] = a
			}
			got, err := a.Allocate(tc.free, tc.mustInclude, tc.k)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Allocate(%v, %v, %d) = %v, %v; want %v", tc.free, tc.mustInclude, tc.k, got, err, tc.want)
			}
		})
	}
}

// TestPickMIGSliceOnSimulatedH100 uses the geometry and slices a simulated
// H100 reports: seven 1g.10gb slices, those at 0 and 4 handed out.
func TestPickMIGSliceOnSimulatedH100(t *testing.T) {
	ctx := context.Background()
	b := simBackend(t, "dgx-h100")
	if err := b.SetMIGMode(ctx, 0, true); err != nil {
		t.Fatalf("enabling mig: %v", err)
	}
	for _, s := range sevenOnes {
		if _, err := b.CreateMIGDevice(ctx, 0, "1g.10gb", s); err != nil {
			t.Fatalf("creating 1g.10gb at %d: %v", s, err)
		}
	}
	profiles, err := b.MIGProfiles(ctx, 0)
	if err != nil {
		t.Fatalf("MIGProfiles: %v", err)
	}
	for _, want := range h100Profiles() {
		i := slices.IndexFunc(profiles, func(p gpu.MIGProfileInfo) bool { return p.Name == want.Name })
		if i < 0 || !slices.Equal(profiles[i].Placements, want.Placements) || profiles[i].MaxInstances != want.MaxInstances {
			t.Errorf("simulated H100 profile %s differs from the fixture: %+v", want.Name, profiles)
		}
	}
	g := topology.MIGGPU{Profiles: profiles}
	for _, d := range discover(t, b).Devices[0].MIGDevices {
		if d.Placement.Start == 0 || d.Placement.Start == 4 {
			g.Used = append(g.Used, d.Placement)
		} else {
			g.Free = append(g.Free, d.Placement)
		}
	}
	if len(g.Used) != 2 || len(g.Free) != 5 {
		t.Fatalf("discovered %d used and %d free slices, want 2 and 5", len(g.Used), len(g.Free))
	}
	got, err := topology.PickMIGSlice(g)
	if want := (gpu.Placement{Start: 1, Size: 1}); err != nil || got != want {
		t.Errorf("PickMIGSlice = %v, %v; want %v", got, err, want)
	}
}
