package topology

import (
	"fmt"
)

// SharePolicy says which GPU serves a request for time-sliced share units.
type SharePolicy string

// Share policies.
const (
	// SharePacked picks the GPU with the fewest free units that still fit, so
	// that whole GPUs stay free. The default.
	SharePacked SharePolicy = "packed"
	// ShareDistributed picks the GPU with the most free units, spreading load.
	ShareDistributed SharePolicy = "distributed"
)

// ParseSharePolicy reads a policy name; the empty string is SharePacked.
func ParseSharePolicy(s string) (SharePolicy, error) {
	switch p := SharePolicy(s); p {
	case "":
		return SharePacked, nil
	case SharePacked, ShareDistributed:
		return p, nil
	}
	return "", fmt.Errorf("unknown share policy %q, want %q or %q", s, SharePacked, ShareDistributed)
}

// ShareGPU is one GPU's time-sliced share units.
type ShareGPU struct {
	// Free is the number of units not handed out.
	Free int
	// Total is the number of units the GPU is shared into (its replicas); 0
	// for a GPU that is not shared.
	Total int
	// Healthy is false for a GPU that must not get new work.
	Healthy bool
}

// PickShareGPU returns the position in gpus of the one GPU that serves a
// request for units share units; all of them must come from that GPU.
//
// Only healthy GPUs with at least units free qualify. SharePacked picks the
// one with the fewest free units, then the one with the most units already
// handed out (a partly used GPU before an untouched one); ShareDistributed
// picks the one with the most free units, then the fewest handed out. Ties go
// to the lowest position. An empty policy means SharePacked.
//
// It fails when units < 1, the policy is unknown, or a GPU's counts are
// inconsistent (negative, or more free than total); and with an error wrapping
// ErrInsufficient, saying how many units the roomiest healthy GPU has free,
// when no single GPU fits.
func PickShareGPU(gpus []ShareGPU, units int, policy SharePolicy) (int, error) {
	if units < 1 {
		return 0, fmt.Errorf("requested %d share units, want at least 1", units)
	}
	policy, err := ParseSharePolicy(string(policy))
	if err != nil {
		return 0, err
	}
	for i, g := range gpus {
		if g.Free < 0 || g.Total < 0 || g.Free > g.Total {
			return 0, fmt.Errorf("gpu %d has %d of %d share units free, want 0 <= free <= total", i, g.Free, g.Total)
		}
	}
	chosen, roomiest := -1, -1
	for i, g := range gpus {
		if !g.Healthy {
			continue
		}
		if roomiest < 0 || g.Free > gpus[roomiest].Free {
			roomiest = i
		}
		if g.Free < units {
			continue
		}
		if chosen < 0 || shareBetter(g, gpus[chosen], policy) {
			chosen = i
		}
	}
	if chosen >= 0 {
		return chosen, nil
	}
	if roomiest < 0 {
		return 0, fmt.Errorf("requested %d share units, no healthy gpu among %d: %w", units, len(gpus), ErrInsufficient)
	}
	return 0, fmt.Errorf("requested %d share units on one gpu, the most any healthy gpu has free is %d (gpu %d): %w",
		units, gpus[roomiest].Free, roomiest, ErrInsufficient)
}

// shareBetter reports whether g ranks strictly before h under policy; equal
// GPUs keep the earlier (lower) position.
func shareBetter(g, h ShareGPU, policy SharePolicy) bool {
	gUsed, hUsed := g.Total-g.Free, h.Total-h.Free
	if policy == ShareDistributed {
		if g.Free != h.Free {
			return g.Free > h.Free
		}
		return gUsed < hUsed
	}
	if g.Free != h.Free {
		return g.Free < h.Free
	}
	return gUsed > hUsed
}
