package topology_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// h100Profiles is the MIG geometry of an H100 80GB, as NVML reports it (see
// docs/machines.md): 8 memory slices, 7 compute slices.
func h100Profiles() []gpu.MIGProfileInfo {
	aligned := func(size, limit int) []gpu.Placement {
		var out []gpu.Placement
		for s := 0; s < limit && s+size <= 8; s += size {
			out = append(out, gpu.Placement{Start: s, Size: size})
		}
		return out
	}
	return []gpu.MIGProfileInfo{
		{Name: "1g.10gb", SliceCount: 1, MemoryMiB: 9984, MaxInstances: 7, Placements: aligned(1, 7)},
		{Name: "1g.10gb+me", SliceCount: 1, MemoryMiB: 9984, MaxInstances: 1, Placements: aligned(1, 7)},
		{Name: "1g.20gb", SliceCount: 1, MemoryMiB: 20096, MaxInstances: 4, Placements: aligned(2, 8)},
		{Name: "2g.20gb", SliceCount: 2, MemoryMiB: 20096, MaxInstances: 3, Placements: aligned(2, 6)},
		{Name: "3g.40gb", SliceCount: 3, MemoryMiB: 40448, MaxInstances: 2, Placements: aligned(4, 8)},
		{Name: "4g.40gb", SliceCount: 4, MemoryMiB: 40448, MaxInstances: 1, Placements: aligned(4, 4)},
		{Name: "7g.80gb", SliceCount: 7, MemoryMiB: 81152, MaxInstances: 1, Placements: aligned(8, 8)},
	}
}

// slots returns placements of size at the given starts.
func slots(size int, starts ...int) []gpu.Placement {
	out := make([]gpu.Placement, len(starts))
	for i, s := range starts {
		out[i] = gpu.Placement{Start: s, Size: size}
	}
	return out
}

// h100With is an H100 cut into slices of size at every given start; the slices
// at used are handed out, the rest are free.
func h100With(size int, starts []int, used ...int) topology.MIGGPU {
	g := topology.MIGGPU{Profiles: h100Profiles()}
	for _, s := range starts {
		pl := gpu.Placement{Start: s, Size: size}
		isUsed := false
		for _, u := range used {
			isUsed = isUsed || u == s
		}
		if isUsed {
			g.Used = append(g.Used, pl)
		} else {
			g.Free = append(g.Free, pl)
		}
	}
	return g
}

var sevenOnes = []int{0, 1, 2, 3, 4, 5, 6}

func TestPickMIGSlice(t *testing.T) {
	tests := []struct {
		name    string
		gpu     topology.MIGGPU
		want    gpu.Placement
		wantErr string
	}{
		{name: "1g.10gb on an idle gpu takes the last slice, keeping 4g.40gb placeable",
			gpu: h100With(1, sevenOnes), want: gpu.Placement{Start: 6, Size: 1}},
		{name: "1g.10gb next to a used slice, keeping a 2g.20gb pair",
			gpu: h100With(1, sevenOnes, 0, 4), want: gpu.Placement{Start: 1, Size: 1}},
		{name: "1g.10gb keeps the free half for a 3g.40gb",
			gpu: h100With(1, sevenOnes, 1, 2, 3), want: gpu.Placement{Start: 0, Size: 1}},
		{name: "2g.20gb keeps the upper half for a 3g.40gb",
			gpu: h100With(2, []int{0, 2, 4}, 2), want: gpu.Placement{Start: 0, Size: 2}},
		{name: "the only free slice",
			gpu: h100With(4, []int{0, 4}, 0), want: gpu.Placement{Start: 4, Size: 4}},
		{name: "mixed layout: used 3g.40gb at 4, free 1g.10gb at 0..3",
			gpu:  topology.MIGGPU{Profiles: h100Profiles(), Used: slots(4, 4), Free: slots(1, 0, 1, 2, 3)},
			want: gpu.Placement{Start: 0, Size: 1}},

		{name: "no free slice", gpu: h100With(1, sevenOnes, sevenOnes...), wantErr: "no free mig slice"},
		{name: "no profiles", gpu: topology.MIGGPU{Free: slots(1, 0)}, wantErr: "gpu has no mig profiles"},
		{name: "free slice overlaps a used one",
			gpu:     topology.MIGGPU{Profiles: h100Profiles(), Used: slots(4, 0), Free: slots(1, 2)},
			wantErr: "free slice 2:1 overlaps a used slice (used: 0:4)"},
		{name: "free slices overlap",
			gpu:     topology.MIGGPU{Profiles: h100Profiles(), Free: []gpu.Placement{{Start: 0, Size: 2}, {Start: 1, Size: 1}}},
			wantErr: "free slices 0:2 and 1:1 overlap"},
		{name: "free slice outside the gpu",
			gpu: topology.MIGGPU{Profiles: h100Profiles(), Free: slots(1, 8)}, wantErr: "free slice 8:1 is outside the gpu's memory slices 0 to 7"},
		{name: "used slice outside the gpu",
			gpu: topology.MIGGPU{Profiles: h100Profiles(), Used: slots(2, -1), Free: slots(1, 3)}, wantErr: "used slice -1:2 is outside"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := topology.PickMIGSlice(tc.gpu)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("PickMIGSlice = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("PickMIGSlice = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestPickMIGDevice(t *testing.T) {
	busyNode := func() []topology.MIGGPU {
		// 8 GPUs × 7 1g.10gb slices: 56 slices, some handed out.
		var gs []topology.MIGGPU
		for i := range 8 {
			gs = append(gs, h100With(1, sevenOnes, sevenOnes[:i%4]...))
		}
		return gs
	}
	tests := []struct {
		name    string
		gpus    []topology.MIGGPU
		wantGPU int
		want    gpu.Placement
		wantErr string
	}{
		{name: "a partly used gpu before an idle one",
			gpus: []topology.MIGGPU{h100With(1, sevenOnes), h100With(1, sevenOnes, 3)}, wantGPU: 1, want: gpu.Placement{Start: 2, Size: 1}},
		{name: "idle gpus: the lowest position",
			gpus: []topology.MIGGPU{h100With(1, sevenOnes), h100With(1, sevenOnes)}, wantGPU: 0, want: gpu.Placement{Start: 6, Size: 1}},
		{name: "a gpu with no free slice is skipped",
			gpus: []topology.MIGGPU{h100With(1, sevenOnes, sevenOnes...), h100With(1, sevenOnes, 0)}, wantGPU: 1, want: gpu.Placement{Start: 1, Size: 1}},
		{name: "as many free: the gpu whose slice keeps more wins",
			gpus: []topology.MIGGPU{h100With(1, sevenOnes, 0), h100With(1, sevenOnes, 6)}, wantGPU: 1, want: gpu.Placement{Start: 4, Size: 1}},
		{name: "56-slice node: the busiest gpu", gpus: busyNode(), wantGPU: 3, want: gpu.Placement{Start: 3, Size: 1}},
		{name: "no free slice anywhere", gpus: []topology.MIGGPU{h100With(4, []int{0, 4}, 0, 4)}, wantErr: "no free mig slice of the requested profile on any of 1 gpus"},
		{name: "bad gpu is named", gpus: []topology.MIGGPU{h100With(1, sevenOnes), {Free: slots(1, 0)}}, wantErr: "gpu 1: gpu has no mig profiles"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotGPU, got, err := topology.PickMIGDevice(tc.gpus)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("PickMIGDevice = %d, %v, %v; want error containing %q", gotGPU, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || gotGPU != tc.wantGPU || got != tc.want {
				t.Errorf("PickMIGDevice = %d, %v, %v; want %d, %v", gotGPU, got, err, tc.wantGPU, tc.want)
			}
		})
	}
	if _, _, err := topology.PickMIGDevice(nil); !errors.Is(err, topology.ErrInsufficient) {
		t.Errorf("PickMIGDevice(nil): %v, want an error wrapping ErrInsufficient", err)
	}
}
