package scheduler

import (
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// TestStrandedGPUsByCause builds one node per cause and checks each cause's
// gauge, then the scheduler's metrics with promtool.
func TestStrandedGPUsByCause(t *testing.T) {
	nv := newGPUNode("nv", t0).gpus(4, h100, "nvidia.com/gpu", 1, numaHalves(4)).links(func(i, j int) string {
		if i/2 == j/2 {
			return "NV4:PHB" // NVLink pairs 0-1 and 2-3
		}
		return "SYS"
	})
	full := l40sServer("full", t0).obj()
	h := newHarness(t,
		l40sServer("l40s", t0).obj(),
		sharedNode("ts", t0, 2, 4).alloc("nb", "alice", "GPU-ts-0::0").obj(), // GPU 0: 3 of 4 units free
		nv.alloc("ml", "a", "GPU-nv-1").alloc("ml", "b", "GPU-nv-3").obj(),   // free 0 and 2: no NVLink between them
		l40sServer("sick", t0).unhealthy(1, "XID 79").obj(),
		full,
	)
	h.nodes["full"].SetNode(kubeNode(full, "0", "1Ti")) // every CPU requested
	// The scheduler's /metrics collector reports this harness's plugin
	// (New makes it report the scheduler's).
	gauges.use(h.p)
	t.Cleanup(func() { gauges.use(nil) })
	gauge := func(cause string) float64 {
		return gatheredGauge(t, "tessera_scheduler_stranded_gpus", "cause", cause)
	}
	if got := gauge("no_cpu"); got != 0 {
		t.Errorf("no_cpu before any scheduling cycle = %v, want 0 (the free CPU is not known yet)", got)
	}
	if got := gauge("wrong_product"); got != 0 {
		t.Errorf("wrong_product before any pod = %v, want 0", got)
	}

	// A scheduling cycle reads the nodes' free CPU; the learned workload
	// is pods pinned to H100.
	h.p.mu.Lock()
	for name, ni := range h.nodes {
		h.p.syncFree(h.p.c.nodes[name], ni)
	}
	r, err := h.p.c.scorer.Compile(scoring.Demand{GPUs: 1, Allowed: []string{h100}})
	if err != nil {
		t.Fatal(err)
	}
	h.p.c.scorer.Observe(r)
	h.p.mu.Unlock()

	want := map[string]float64{
		"no_cpu":        4,                // full: 4 free L40S, no CPU
		"wrong_product": 4 + 1.75 + 3 + 4, // every free non-H100 GPU: l40s, ts (3/4 + 1), sick (3 healthy), full
		"share_holes":   0.75,             // ts GPU 0
		"broken_nvlink": 2,                // nv GPUs 0 and 2
		"unhealthy":     1,                // sick GPU 1
	}
	for _, cause := range strandedCauses {
		if got := gauge(cause); math.Abs(got-want[cause]) > 1e-9 {
			t.Errorf("stranded %s = %v, want %v", cause, got, want[cause])
		}
	}
	observe("Filter", time.Now())
	checkWithPromtool(t)
}

// gatheredGauge is the value of the gauge name{label="value"} as the
// scheduler's /metrics serves it (the legacy registry).
func gatheredGauge(t *testing.T, name, label, value string) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{%s=%q} not gathered", name, label, value)
	return 0
}

// checkWithPromtool runs `promtool check metrics` on the scheduler's
// tessera_scheduler_* families as /metrics serves them; every finding fails.
func checkWithPromtool(t *testing.T) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
			t.Fatalf("promtool not found and TESSERA_REQUIRE_TOOLS=1: %v", err)
		}
		t.Skipf("promtool not installed (Debian package prometheus): %v", err)
	}
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "tessera_scheduler_") {
			continue
		}
		n++
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	if n < 5 {
		t.Fatalf("%d tessera_scheduler_ families registered, want at least 5:\n%s", n, buf.String())
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running promtool: %v", err)
	}
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestGaugesAreComputedWhenScraped checks that the gauges are the model's at
// the scrape, with no GPUNode event in between: a node whose heartbeat ages
// past staleAfter counts as stale, and its free GPUs leave the pool.
func TestGaugesAreComputedWhenScraped(t *testing.T) {
	h := newHarness(t, dgxH100("dgx", t0).obj(), l40sServer("l40s", t0.Add(-time.Minute)).obj())
	gauges.use(h.p)
	t.Cleanup(func() { gauges.use(nil) })
	if got := gatheredGauge(t, "tessera_scheduler_free_gpus", "pool", ""); got != 12 {
		t.Errorf("free GPUs = %v, want 12 (8 H100, 4 L40S)", got)
	}
	h.clock.Step(90 * time.Second) // l40s is 2m30s old, past staleAfter (2m)
	if got := gatheredGauge(t, "tessera_scheduler_gpunodes", "state", "stale"); got != 1 {
		t.Errorf("stale GPUNodes = %v, want 1", got)
	}
	if got := gatheredGauge(t, "tessera_scheduler_free_gpus", "pool", ""); got != 8 {
		t.Errorf("free GPUs = %v, want 8 (the stale node's do not count)", got)
	}
}
