package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/api/resource"
)

// defaultGCPercent is the agent's GOGC when the environment sets none.
//
// The agent is a small long-lived daemon on every GPU node: a live heap of
// about 5 MB (the machine model, the encoded snapshot, the pod view, one
// deflate writer) and a steady trickle of garbage (about 1 MB per collection
// pass every 10 s, some 60 KB per scrape for the Go and process metrics).
// With Go's default GOGC=100 the heap grows to twice the live heap between
// collections and the runtime keeps about that much resident; 25 holds it
// to 1.25 times (measured on a simulated DGX H100 with 56 MIG devices and
// 100 pods, `make bench-agent`: 11.5 MiB of anonymous memory at 50, 9-10 at
// 25). The price is more collections: the cost of garbage collection per
// byte allocated is about four times Go's default, which here is still
// about 0.1 % of one core in all, and 2000 back-to-back scrapes see a p99 of
// 3-4 ms instead of 2 (docs/telemetry.md, "Memory"). It is a percentage,
// not a limit, so a node whose live heap is larger (more devices, more pods)
// still gets headroom in proportion and never a GC death spiral. GOGC in
// the environment overrides it, as usual.
const defaultGCPercent = 25

// gcSettings returns the GC percent to set (0 to leave the runtime's, when
// GOGC is set) and the soft memory limit in bytes from --memory-limit (0:
// none). gogc is the GOGC environment variable.
func gcSettings(gogc, memoryLimit string) (percent int, limit int64, err error) {
	if gogc == "" {
		percent = defaultGCPercent
	}
	if memoryLimit == "" {
		return percent, 0, nil
	}
	q, err := resource.ParseQuantity(memoryLimit)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid --memory-limit %q: want a quantity such as 48Mi, or 0 for none: %w", memoryLimit, err)
	}
	limit, ok := q.AsInt64()
	if !ok || limit < 0 {
		return 0, 0, fmt.Errorf("invalid --memory-limit %q: want a whole number of bytes >= 0, such as 48Mi", memoryLimit)
	}
	return percent, limit, nil
}

// applyRuntimePolicy sets the agent's GC percent and soft memory limit (see
// gcSettings) and disables memory-profile sampling unless profiles can be
// read (debugAddress is --debug-address): its sample table costs up to a
// megabyte and a half of memory that nothing would read.
func applyRuntimePolicy(gogc, memoryLimit, debugAddress string) error {
	percent, limit, err := gcSettings(gogc, memoryLimit)
	if err != nil {
		return err
	}
	if percent != 0 {
		debug.SetGCPercent(percent)
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	if debugAddress == "" {
		runtime.MemProfileRate = 0
	}
	return nil
}
