package reconcile_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
)

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

var (
	allDisabled = repeat("disabled", 8)
	all1g       = repeat("enabled:1g.10gb@0,1g.10gb@1,1g.10gb@2,1g.10gb@3,1g.10gb@4,1g.10gb@5,1g.10gb@6", 8)
)

// TestLabelFlow drives the layout manager through node labels on a real
// kube-apiserver, with a simulated DGX H100 per node and the kubelet's own
// PodResources server.
func TestLabelFlow(t *testing.T) {
	cp := k8stest.StartForTest(t)
	client := clientFor(t, cp)

	t.Run("relabel reaches success and re-advertises", func(t *testing.T) {
		n := newNode(t, cp, "relabel", nil)
		a := n.startAgent(n.opened)
		states := n.watchLabels()
		poll(t, "the initial resources", func() (bool, error) {
			return maps.Equal(counts(a), map[string]int{"nvidia.com/gpu": 8}), nil
		})
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb")
		n.waitState(reconcile.MIGStateLabel, "all-1g.10gb", reconcile.StateSuccess)
		if got := n.layout(); !slices.Equal(got, all1g) {
			t.Errorf("layout = %v, want %v", got, all1g)
		}
		if got, want := counts(a), map[string]int{"nvidia.com/mig-1g.10gb": 56}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
		poll(t, "the state label history", func() (bool, error) {
			return slices.Equal(states.states(), []string{"", reconcile.StatePending, reconcile.StateSuccess}), nil
		})
		n.waitEvent(reconcile.ReasonMIGPending, `"all-1g.10gb"`, "gpus 0,1,2,3,4,5,6,7")
		n.waitEvent(reconcile.ReasonMIGApplied, `"all-1g.10gb"`)
		// The new MIG devices are followed by the health tracker, hence
		// advertised healthy, and nothing stays withheld.
		want := `
# HELP tessera_device_plugin_devices Device IDs advertised to the kubelet, per resource and health.
# TYPE tessera_device_plugin_devices gauge
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/mig-1g.10gb"} 56
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/mig-1g.10gb"} 0
# HELP tessera_mig_layout_changes_total MIG layout changes by outcome: success (applied or already in place) or failure (the previous layout stays).
# TYPE tessera_mig_layout_changes_total counter
tessera_mig_layout_changes_total{result="failure"} 0
tessera_mig_layout_changes_total{result="success"} 1
# HELP tessera_mig_layout_state 1 for the MIG config the node label asks for and the state of its change (pending, success, failed).
# TYPE tessera_mig_layout_state gauge
tessera_mig_layout_state{config="all-1g.10gb",state="success"} 1
`
		if err := testutil.GatherAndCompare(a.Registry(), strings.NewReader(want), "tessera_device_plugin_devices",
			"tessera_mig_layout_changes_total", "tessera_mig_layout_state"); err != nil {
			t.Error(err)
		}
		if n, err := testutil.GatherAndCount(a.Registry(), "tessera_mig_layout_apply_duration_seconds"); err != nil || n != 1 {
			t.Errorf("apply duration histogram: %d series, %v", n, err)
		}
	})

	t.Run("sharing label, and sharing kept across a MIG change", func(t *testing.T) {
		n := newNode(t, cp, "sharing", nil)
		a := n.startAgent(n.opened)
		n.label(reconcile.SharingConfigLabel, "shared")
		n.waitState(reconcile.SharingStateLabel, "shared", reconcile.StateSuccess)
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 16}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
		n.label(reconcile.MIGConfigLabel, "half-1g.10gb")
		n.waitState(reconcile.MIGStateLabel, "half-1g.10gb", reconcile.StateSuccess)
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 8, "nvidia.com/mig-1g.10gb": 28}; !maps.Equal(got, want) {
			t.Errorf("resources after the MIG change = %v, want %v", got, want)
		}
		n.label(reconcile.SharingConfigLabel, "missing")
		n.waitState(reconcile.SharingStateLabel, "missing", reconcile.StateFailed)
		n.waitEvent("DevicePluginConfigFailed", `"missing"`, `serving "shared"`)
	})

	t.Run("config files changed behind the same label are re-applied", func(t *testing.T) {
		n := newNode(t, cp, "sharing-files", map[string]string{reconcile.SharingConfigLabel: "shared"})
		a := n.startAgent(n.opened)
		n.waitState(reconcile.SharingStateLabel, "shared", reconcile.StateSuccess)
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 16}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
		// The ConfigMap behind the label changes: no more sharing.
		if err := os.WriteFile(filepath.Join(n.dpDir, "shared"), []byte(mixedConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		poll(t, "the rewritten config advertised", func() (bool, error) {
			return maps.Equal(counts(a), map[string]int{"nvidia.com/gpu": 8}), nil
		})
		// A label naming a config that is not there yet fails, and succeeds
		// once the file appears, with no relabel.
		n.label(reconcile.SharingConfigLabel, "late")
		n.waitState(reconcile.SharingStateLabel, "late", reconcile.StateFailed)
		// Written whole, as the kubelet swaps a ConfigMap's files in: a
		// plain write is seen first as an empty file.
		tmp := filepath.Join(t.TempDir(), "late")
		if err := os.WriteFile(tmp, []byte(sharedConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(n.dpDir, "late")); err != nil {
			t.Fatal(err)
		}
		n.waitState(reconcile.SharingStateLabel, "late", reconcile.StateSuccess)
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 16}; !maps.Equal(got, want) {
			t.Errorf("resources after the file appeared = %v, want %v", got, want)
		}
		n.waitEvent("DevicePluginConfigApplied", `"late"`)
	})

	t.Run("bad config fails with the layout untouched", func(t *testing.T) {
		n := newNode(t, cp, "bad-config", nil)
		// A copy of the config file, to break it.
		data, err := os.ReadFile(n.migFile)
		if err != nil {
			t.Fatal(err)
		}
		n.migFile = filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(n.migFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
		a := n.startAgent(n.opened)
		n.label(reconcile.MIGConfigLabel, "all-3g.40gb")
		n.waitState(reconcile.MIGStateLabel, "all-3g.40gb", reconcile.StateSuccess)
		before, resources := n.layout(), counts(a)

		tests := []struct {
			label string
			file  string
			want  []string
		}{
			{label: "all-8x1g.10gb", want: []string{`"all-8x1g.10gb"`, "1g.10gb", "gpus 0-7", "at most 7"}},
			{label: "no-such-config", want: []string{`"no-such-config"`}},
			{label: "all-1g.10gb", file: "version: v1\nmig-configs:\n  all-1g.10gb: [\n", want: []string{`"all-1g.10gb"`, "config.yaml"}},
		}
		for _, tt := range tests {
			if tt.file != "" {
				if err := os.WriteFile(n.migFile, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			n.label(reconcile.MIGConfigLabel, tt.label)
			n.waitState(reconcile.MIGStateLabel, tt.label, reconcile.StateFailed)
			n.waitEvent(reconcile.ReasonMIGFailed, tt.want...)
			if got := n.layout(); !slices.Equal(got, before) {
				t.Errorf("%s: layout = %v, want it untouched: %v", tt.label, got, before)
			}
			if got := counts(a); !maps.Equal(got, resources) {
				t.Errorf("%s: resources = %v, want them untouched: %v", tt.label, got, resources)
			}
		}
	})

	t.Run("wait timeout fails, then a same-value relabel retries", func(t *testing.T) {
		n := newNode(t, cp, "wait-timeout", nil)
		a := n.startAgent(n.opened, withDrain(reconcile.DrainWait, time.Second))
		gpu3 := n.sim.UUID(3)
		n.hold("default", "trainer", "nvidia.com/gpu", gpu3)
		states := n.watchLabels()
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb")
		n.waitState(reconcile.MIGStateLabel, "all-1g.10gb", reconcile.StateFailed)
		n.waitEvent(reconcile.ReasonMIGFailed, `"all-1g.10gb"`, "timed out", "default/trainer", gpu3)
		if got := n.layout(); !slices.Equal(got, allDisabled) {
			t.Errorf("layout = %v, want it untouched", got)
		}
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 8}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
		// Nothing stays withheld after the failure.
		if err := testutil.GatherAndCompare(a.Registry(), strings.NewReader(`
# HELP tessera_device_plugin_devices Device IDs advertised to the kubelet, per resource and health.
# TYPE tessera_device_plugin_devices gauge
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/gpu"} 8
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/gpu"} 0
`), "tessera_device_plugin_devices"); err != nil {
			t.Error(err)
		}

		// The pod ends; the operator applies the same value again, clearing
		// the state as docs/mig-layouts.md says.
		n.release("default", "trainer")
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb", reconcile.MIGStateLabel, "")
		n.waitState(reconcile.MIGStateLabel, "all-1g.10gb", reconcile.StateSuccess)
		if got := n.layout(); !slices.Equal(got, all1g) {
			t.Errorf("layout after the retry = %v, want %v", got, all1g)
		}
		poll(t, "the state label history", func() (bool, error) {
			return slices.Equal(states.states(), []string{"", reconcile.StatePending, reconcile.StateFailed, "", reconcile.StatePending, reconcile.StateSuccess}), nil
		})
	})

	t.Run("a relabel while waiting for pods supersedes the wait", func(t *testing.T) {
		n := newNode(t, cp, "superseded", nil)
		n.startAgent(n.opened, withDrain(reconcile.DrainWait, time.Minute))
		n.hold("default", "notebook", "nvidia.com/gpu", n.sim.UUID(3))
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb")
		n.waitEvent(reconcile.ReasonMIGPending, `"all-1g.10gb"`)
		n.label(reconcile.MIGConfigLabel, "gpu0-3g.40gb")
		n.waitState(reconcile.MIGStateLabel, "gpu0-3g.40gb", reconcile.StateSuccess)
		n.waitEvent(reconcile.ReasonMIGSuperseded, `"all-1g.10gb"`, `superseded by mig config "gpu0-3g.40gb"`)
		want := append([]string{"enabled:3g.40gb@0,3g.40gb@4"}, repeat("disabled", 7)...)
		if got := n.layout(); !slices.Equal(got, want) {
			t.Errorf("layout = %v, want %v", got, want)
		}
	})

	t.Run("a mode change that needs a reset fails and is reported", func(t *testing.T) {
		n := newNode(t, cp, "reset-required", nil)
		if err := n.sim.SetResetRequiredForMIG(2, true); err != nil {
			t.Fatal(err)
		}
		a := n.startAgent(n.opened)
		n.label(reconcile.MIGConfigLabel, "all-3g.40gb")
		n.waitState(reconcile.MIGStateLabel, "all-3g.40gb", reconcile.StateFailed)
		n.waitEvent(reconcile.ReasonMIGFailed, `"all-3g.40gb"`, "gpu 2", "reset")
		if got := n.layout(); !slices.Equal(got, allDisabled) {
			t.Errorf("layout = %v, want every GPU back without MIG", got)
		}
		if got, want := counts(a), map[string]int{"nvidia.com/gpu": 8}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
	})

	t.Run("evict frees only the affected GPUs and honours disruption budgets", func(t *testing.T) {
		n := newNode(t, cp, "evict", nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		n.runKubelet(ctx)
		n.startAgent(n.opened, withDrain(reconcile.DrainEvict, 2*time.Second))
		n.runningPod("evict-a", nil, "nvidia.com/gpu", n.sim.UUID(0))
		n.runningPod("evict-b", map[string]string{"app": "evict-b"}, "nvidia.com/gpu", n.sim.UUID(1))

		n.label(reconcile.MIGConfigLabel, "gpu0-3g.40gb")
		n.waitState(reconcile.MIGStateLabel, "gpu0-3g.40gb", reconcile.StateSuccess)
		if n.podExists("evict-a") {
			t.Error("pod evict-a on gpu 0 was not evicted")
		}
		if !n.podExists("evict-b") {
			t.Error("pod evict-b on gpu 1, which did not change, was evicted")
		}
		n.waitEvent(reconcile.ReasonMIGEvicting, "default/evict-a", `"gpu0-3g.40gb"`)
		after := n.layout()

		// A budget that allows no disruption protects evict-b: the change
		// times out and fails, evict-b keeps running, the layout stays.
		one := intstr.FromInt32(1)
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "evict-b", Namespace: "default"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &one,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "evict-b"}}},
		}
		if _, err := client.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		n.label(reconcile.MIGConfigLabel, "gpu1-3g.40gb")
		n.waitState(reconcile.MIGStateLabel, "gpu1-3g.40gb", reconcile.StateFailed)
		n.waitEvent(reconcile.ReasonMIGFailed, `"gpu1-3g.40gb"`, "default/evict-b", "disruption budget")
		if !n.podExists("evict-b") {
			t.Error("pod evict-b was evicted despite its disruption budget")
		}
		if got := n.layout(); !slices.Equal(got, after) {
			t.Errorf("layout = %v, want it untouched: %v", got, after)
		}
	})

	t.Run("pending left by a stopped agent is finished at start", func(t *testing.T) {
		n := newNode(t, cp, "stale-pending", map[string]string{
			reconcile.MIGConfigLabel: "all-3g.40gb", reconcile.MIGStateLabel: reconcile.StatePending,
		})
		a := n.startAgent(n.opened)
		n.waitState(reconcile.MIGStateLabel, "all-3g.40gb", reconcile.StateSuccess)
		if got, want := counts(a), map[string]int{"nvidia.com/mig-3g.40gb": 16}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
	})

	t.Run("failed is kept at start until the operator asks again", func(t *testing.T) {
		n := newNode(t, cp, "stale-failed", map[string]string{
			reconcile.MIGConfigLabel: "all-3g.40gb", reconcile.MIGStateLabel: reconcile.StateFailed,
		})
		n.startAgent(n.opened)
		// The loop handles changes in order: once the sharing label that
		// follows is reported, the start is behind it.
		n.label(reconcile.SharingConfigLabel, "shared")
		n.waitState(reconcile.SharingStateLabel, "shared", reconcile.StateSuccess)
		if got := n.labels()[reconcile.MIGStateLabel]; got != reconcile.StateFailed {
			t.Errorf("state at start = %q, want failed kept", got)
		}
		if got := n.layout(); !slices.Equal(got, allDisabled) {
			t.Errorf("layout = %v, want it untouched", got)
		}
		// Any state value the agent did not write asks for a retry.
		n.label(reconcile.MIGStateLabel, "retry")
		n.waitState(reconcile.MIGStateLabel, "all-3g.40gb", reconcile.StateSuccess)
		if got := n.layout(); !slices.Equal(got, repeat("enabled:3g.40gb@0,3g.40gb@4", 8)) {
			t.Errorf("layout after the retry = %v", got)
		}
	})

	t.Run("without a MIG config file the MIG labels are left alone", func(t *testing.T) {
		n := newNode(t, cp, "no-mig-file", nil)
		n.startAgent(n.opened, withoutMIGConfigFile)
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb")
		// The loop handles changes in order: the sharing label follows.
		n.label(reconcile.SharingConfigLabel, "shared")
		n.waitState(reconcile.SharingStateLabel, "shared", reconcile.StateSuccess)
		if got, ok := n.labels()[reconcile.MIGStateLabel]; ok {
			t.Errorf("MIG state = %q, want no state label", got)
		}
		if got := n.layout(); !slices.Equal(got, allDisabled) {
			t.Errorf("layout = %v, want it untouched", got)
		}
	})

	t.Run("agent killed mid-apply, restarted: whole layout, not pending", func(t *testing.T) {
		n := newNode(t, cp, "killed", nil)
		nb := n.newBackend()
		hang := &hangingBackend{Backend: nb, after: 10, hung: make(chan struct{})}
		first := n.startAgent(hang)
		n.label(reconcile.MIGConfigLabel, "all-1g.10gb")
		select {
		case <-hang.hung:
		case <-time.After(30 * time.Second):
			t.Fatal("the apply never reached its 11th MIG device")
		}
		first.kill()
		if got := n.labels()[reconcile.MIGStateLabel]; got != reconcile.StatePending {
			t.Fatalf("state while the apply hangs = %q, want pending", got)
		}
		partial := n.layout()
		if slices.Equal(partial, allDisabled) || slices.Equal(partial, all1g) {
			t.Fatalf("layout when killed = %v, want a half-applied one", partial)
		}

		second := n.startAgent(nil)
		n.waitState(reconcile.MIGStateLabel, "all-1g.10gb", reconcile.StateSuccess)
		n.waitEvent(reconcile.ReasonMIGRecovered, `"all-1g.10gb"`)
		if got := n.layout(); !slices.Equal(got, all1g) {
			t.Errorf("layout after the restart = %v, want %v", got, all1g)
		}
		if got, want := counts(second), map[string]int{"nvidia.com/mig-1g.10gb": 56}; !maps.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
	})
}

// hangingBackend hangs forever in the MIG device creation after the first
// `after` ones, as a process killed there would stop: no error is returned
// and no rollback runs.
type hangingBackend struct {
	gpu.Backend
	after int32
	calls atomic.Int32
	once  sync.Once
	hung  chan struct{}
}

func (h *hangingBackend) CreateMIGDevice(ctx context.Context, index int, profile string, start int) (gpu.MIGDevice, error) {
	if h.calls.Add(1) > h.after {
		h.once.Do(func() { close(h.hung) })
		select {} // killed: never returns
	}
	return h.Backend.CreateMIGDevice(ctx, index, profile, start)
}
