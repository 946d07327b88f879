package topology_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/topology"
)

// shared returns healthy GPUs with total units each and the given free units.
func shared(total int, free ...int) []topology.ShareGPU {
	out := make([]topology.ShareGPU, len(free))
	for i, f := range free {
		out[i] = topology.ShareGPU{Free: f, Total: total, Healthy: true}
	}
	return out
}

func unhealthy(gs []topology.ShareGPU, positions ...int) []topology.ShareGPU {
	for _, p := range positions {
		gs[p].Healthy = false
	}
	return gs
}

func TestPickShareGPU(t *testing.T) {
	tests := []struct {
		name    string
		gpus    []topology.ShareGPU
		units   int
		policy  topology.SharePolicy
		want    int
		wantErr string
	}{
		{name: "packed: fewest free units that fit", gpus: shared(10, 10, 3, 6, 2), units: 3, policy: topology.SharePacked, want: 1},
		{name: "packed is the default", gpus: shared(10, 10, 3, 6, 2), units: 3, want: 1},
		{name: "packed: exact fit", gpus: shared(10, 10, 4, 5), units: 5, want: 2},
		{name: "packed: ties go to the lowest position", gpus: shared(10, 10, 4, 4), units: 2, want: 1},
		{name: "packed: a partly used gpu before an untouched one with as many free",
			gpus: []topology.ShareGPU{{Free: 4, Total: 4, Healthy: true}, {Free: 4, Total: 8, Healthy: true}}, units: 4, want: 1},
		{name: "packed: all untouched, lowest position", gpus: shared(10, 10, 10, 10), units: 1, want: 0},
		{name: "distributed: most free units", gpus: shared(10, 3, 9, 6), units: 2, policy: topology.ShareDistributed, want: 1},
		{name: "distributed: ties go to the lowest position", gpus: shared(10, 3, 9, 9), units: 2, policy: topology.ShareDistributed, want: 1},
		{name: "distributed: an untouched gpu before a partly used one with as many free",
			gpus: []topology.ShareGPU{{Free: 4, Total: 8, Healthy: true}, {Free: 4, Total: 4, Healthy: true}}, units: 1, policy: topology.ShareDistributed, want: 1},
		{name: "unhealthy gpus are skipped", gpus: unhealthy(shared(10, 2, 5, 9), 0, 1), units: 2, want: 2},
		{name: "a gpu that is not shared never fits", gpus: []topology.ShareGPU{{Healthy: true}, {Free: 1, Total: 2, Healthy: true}}, units: 1, want: 1},
		{name: "8 gpus × 10 shares, packed", gpus: shared(10, 10, 10, 7, 10, 1, 10, 4, 10), units: 4, want: 6},

		{name: "no single gpu fits", gpus: shared(10, 3, 5, 4), units: 6,
			wantErr: "requested 6 share units on one gpu, the most any healthy gpu has free is 5 (gpu 1)"},
		{name: "units spread over gpus do not fit", gpus: shared(4, 2, 2), units: 3, wantErr: "the most any healthy gpu has free is 2 (gpu 0)"},
		{name: "an unhealthy gpu's free units do not count", gpus: unhealthy(shared(10, 9, 2), 0), units: 3,
			wantErr: "the most any healthy gpu has free is 2 (gpu 1)"},
		{name: "no healthy gpu", gpus: unhealthy(shared(10, 9, 2), 0, 1), units: 1, wantErr: "no healthy gpu among 2"},
		{name: "no gpus", gpus: nil, units: 1, wantErr: "no healthy gpu among 0"},
		{name: "units 0", gpus: shared(10, 10), units: 0, wantErr: "requested 0 share units, want at least 1"},
		{name: "unknown policy", gpus: shared(10, 10), units: 1, policy: "spread", wantErr: `unknown share policy "spread", want "packed" or "distributed"`},
		{name: "more free than total", gpus: []topology.ShareGPU{{Free: 5, Total: 4, Healthy: true}}, units: 1,
			wantErr: "gpu 0 has 5 of 4 share units free"},
		{name: "negative free", gpus: []topology.ShareGPU{{Free: 1, Total: 4}, {Free: -1, Total: 4}}, units: 1,
			wantErr: "gpu 1 has -1 of 4 share units free"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := topology.PickShareGPU(tc.gpus, tc.units, tc.policy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("PickShareGPU = %d, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("PickShareGPU = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestPickShareGPUInsufficientIsTyped(t *testing.T) {
	if _, err := topology.PickShareGPU(shared(4, 1), 2, ""); !errors.Is(err, topology.ErrInsufficient) {
		t.Errorf("PickShareGPU: %v, want an error wrapping ErrInsufficient", err)
	}
	if _, err := topology.PickShareGPU(shared(4, 1), 0, ""); errors.Is(err, topology.ErrInsufficient) {
		t.Errorf("PickShareGPU of 0 units: %v, want a plain invalid-input error", err)
	}
}

func TestParseSharePolicy(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    topology.SharePolicy
		wantErr bool
	}{
		{name: "empty is packed", in: "", want: topology.SharePacked},
		{name: "packed", in: "packed", want: topology.SharePacked},
		{name: "distributed", in: "distributed", want: topology.ShareDistributed},
		{name: "case matters", in: "Packed", wantErr: true},
		{name: "unknown", in: "binpack", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := topology.ParseSharePolicy(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseSharePolicy(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
