package reconcile_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
)

// BenchmarkRelabel measures an operator's relabel of a simulated DGX H100
// until nvidia.com/mig.config.state=success, with all 8 GPUs changing
// layout on every relabel (all-1g.10gb <-> all-disabled), against a real
// kube-apiserver: state pending, PodResources check, apply, re-advertise,
// state success. The baseline, measured in the same run, is the time the
// agent spent in pkg/mig's Apply (its apply-duration histogram), so
// relabel/apply is the cost of the Kubernetes path around the GPU work. It
// fails unless NVML was initialised exactly once in the process.
func BenchmarkRelabel(b *testing.B) {
	cp := k8stest.StartForTest(b)
	configs := []string{"all-1g.10gb", "all-disabled"}
	layouts := map[string][]string{"all-1g.10gb": all1g, "all-disabled": allDisabled}
	b.Run("relabel", func(b *testing.B) {
		n := newNode(b, cp, "bench-relabel", nil)
		a := n.startAgent(n.opened)
		states := n.watchLabels()
		b.ResetTimer()
		var total time.Duration
		for i := 0; b.Loop(); i++ {
			want := configs[i%2]
			mark := states.mark()
			start := time.Now()
			n.label(reconcile.MIGConfigLabel, want)
			// success left from the previous config does not count: the
			// change is done at the first success after pending.
			mark = states.await(b, mark, func(l map[string]string) bool {
				return l[reconcile.MIGConfigLabel] == want && l[reconcile.MIGStateLabel] == reconcile.StatePending
			})
			states.await(b, mark, func(l map[string]string) bool {
				return l[reconcile.MIGConfigLabel] == want && l[reconcile.MIGStateLabel] == reconcile.StateSuccess
			})
			total += time.Since(start)
			b.StopTimer()
			if got := n.layout(); !slices.Equal(got, layouts[want]) {
				b.Fatalf("layout after %s = %v", want, got)
			}
			b.StartTimer()
		}
		b.StopTimer()
		relabel := total.Seconds() / float64(b.N)
		apply := histogramMean(b, a, "tessera_mig_layout_apply_duration_seconds")
		b.ReportMetric(relabel, "s/relabel")
		b.ReportMetric(apply, "apply-s/relabel")
		b.ReportMetric(relabel/apply, "relabel/apply")
		// One Init per process: the backend opened at start, reused by every apply.
		inits := n.sim.Calls("Init") + n.sim.Calls("InitWithFlags")
		b.ReportMetric(float64(inits), "nvml-inits/process")
		if inits != 1 {
			b.Errorf("%d NVML Init calls in the process, want 1", inits)
		}
	})
}

// histogramMean is the mean of an agent's histogram.
func histogramMean(b *testing.B, a *agent, name string) float64 {
	b.Helper()
	families, err := a.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			h := f.GetMetric()[0].GetHistogram()
			return h.GetSampleSum() / float64(h.GetSampleCount())
		}
	}
	b.Fatalf("no metric %s", name)
	return 0
}

// await returns the position after the first version from position from on
// that satisfies cond, failing after 30s.
func (lw *labelWatch) await(t testing.TB, from int, cond func(map[string]string) bool) int {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		lw.mu.Lock()
		for ; from < len(lw.history); from++ {
			if cond(lw.history[from]) {
				lw.mu.Unlock()
				return from + 1
			}
		}
		lw.mu.Unlock()
		select {
		case <-lw.changed:
		case <-timeout.C:
			t.Fatal("the node labels never satisfied the condition")
		}
	}
}
