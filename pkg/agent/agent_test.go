package agent_test

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/kube"
)

// openSim opens a simulated machine's backend for one test.
func openSim(t *testing.T, machine string) *backend.Opened {
	t.Helper()
	b, err := backend.Open(context.Background(), "sim:"+machine)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// standaloneConfig runs on b with no Kubernetes API, no kubelet and no
// PodResources socket, serving no address.
func standaloneConfig(t *testing.T, b gpu.Backend) agent.Config {
	dir := t.TempDir()
	return agent.Config{
		Backend:            b,
		NodeName:           "workstation",
		PluginDir:          filepath.Join(dir, "device-plugins"),
		PodResourcesSocket: filepath.Join(dir, "pod-resources", "kubelet.sock"),
	}
}

// running is an agent started by start.
type running struct {
	*agent.Agent
	cancel context.CancelFunc
	done   chan error
}

// start builds an agent with New and runs it; the test's cleanup stops it
// and fails the test if Run returns an error.
func start(ctx context.Context, t *testing.T, cfg agent.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	a, err := agent.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	r := &running{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// stop cancels the agent and waits (at most a minute) for Run to return.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of its context ending")
		return nil
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 60*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(body)
}

func counts(a *agent.Agent) map[string]int {
	out := map[string]int{}
	for _, r := range a.Resources() {
		out[r.Name] = len(r.Devices)
	}
	return out
}

// errorLogs returns the error-level entries a ktesting logger buffered.
func errorLogs(logger klog.Logger) []string {
	var out []string
	for _, e := range logger.GetSink().(ktesting.Underlier).GetBuffer().Data() {
		if e.Type == ktesting.LogError {
			out = append(out, e.Message+": "+errString(e.Err))
		}
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestConfigValidate(t *testing.T) {
	b := openSim(t, "ws-2xrtx4090")
	client := &kube.Client{}
	tests := []struct {
		name     string
		cfg      agent.Config
		wantErrs []string // each must appear; none means valid
	}{
		{name: "standalone defaults", cfg: agent.Config{Backend: b}},
		{name: "in a cluster", cfg: agent.Config{Backend: b, Client: client, NodeName: "n"}},
		{name: "no backend", cfg: agent.Config{}, wantErrs: []string{"Backend: Required value"}},
		{name: "cluster without a node name", cfg: agent.Config{Backend: b, Client: client},
			wantErrs: []string{"NodeName: Required value"}},
		{name: "standalone layout without a file", cfg: agent.Config{Backend: b, StandaloneMIGConfig: "all-1g.10gb"},
			wantErrs: []string{"StandaloneMIGConfig", "needs MIGConfigFile"}},
		{name: "standalone layout in a cluster", cfg: agent.Config{Backend: b, Client: client, NodeName: "n", MIGConfigFile: "f", StandaloneMIGConfig: "x"},
			wantErrs: []string{"is for standalone runs", "kubectl label node n nvidia.com/mig.config=x"}},
		{name: "unknown policies", cfg: agent.Config{Backend: b, SharePolicy: "spread", MIGDrain: "drain"},
			wantErrs: []string{`SharePolicy: Unsupported value: "spread": supported values: "packed", "distributed"`,
				`MIGDrain: Unsupported value: "drain": supported values: "wait", "evict"`}},
		{name: "negative durations", cfg: agent.Config{Backend: b, ShutdownTimeout: -time.Second, CollectionInterval: -1},
			wantErrs: []string{"ShutdownTimeout: Invalid value: \"-1s\": must be >= 0", "CollectionInterval"}},
		{name: "invalid health policy", cfg: agent.Config{Backend: b, HealthPolicy: health.Policy{
			IgnoredXIDs: map[uint64]bool{48: true}, CriticalXIDs: map[uint64]bool{48: true}}},
			wantErrs: []string{"HealthPolicy", "xid 48 is both ignored and critical"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.cfg.Validate()
			if len(tt.wantErrs) == 0 {
				if len(errs) > 0 {
					t.Fatalf("Validate() = %v, want valid", errs)
				}
				return
			}
			got := errs.ToAggregate()
			if got == nil {
				t.Fatalf("Validate() = valid, want errors %q", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(got.Error(), want) {
					t.Errorf("Validate() = %v, want it to say %q", got, want)
				}
			}
			if _, err := agent.New(context.Background(), tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErrs[0]) {
				t.Errorf("New() = %v, want it refused with %q", err, tt.wantErrs[0])
			}
		})
	}
}

// TestStandalone runs an agent with no Kubernetes API, no kubelet and no
// PodResources socket: it advertises its GPUs (to a kubelet that may come),
// serves /metrics, is ready once its first snapshot is taken, shuts down
// cleanly, and logs nothing at error level: none of that is a fault there.
func TestStandalone(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true), ktesting.Verbosity(2)))
	ctx := klog.NewContext(context.Background(), logger)
	b := openSim(t, "pcie-4xl40s")
	a := start(ctx, t, standaloneConfig(t, b))
	h := a.Handler()

	if got, want := counts(a.Agent), map[string]int{"nvidia.com/gpu": 4}; !maps.Equal(got, want) {
		t.Errorf("resources = %v, want %v", got, want)
	}
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	poll(t, "readiness", func() bool { return a.Ready() == nil })
	code, body := get(t, h, "/readyz?verbose")
	if code != http.StatusOK || !strings.Contains(body, "[+]telemetry ok") ||
		!strings.Contains(body, "[+]kubelet-registration not required standalone: not registered with the kubelet yet") {
		t.Errorf("/readyz?verbose = %d\n%s\nwant 200, telemetry ok and registration not required", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/readyz = %d %q, want 200 ok", code, body)
	}
	code, body = get(t, h, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, `DCGM_FI_DEV_GPU_TEMP{`) || !strings.Contains(body, "tessera_device_plugin_devices{") {
		t.Errorf("/metrics = %d, want GPU telemetry and the agent's own metrics; got\n%.2000s", code, body)
	}
	if err := a.stop(t); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if errs := errorLogs(logger); len(errs) > 0 {
		t.Errorf("a standalone agent logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestNotReadyWithoutKubeletInACluster: with a Kubernetes API configured,
// registration with the kubelet is required for readiness.
func TestNotReadyWithoutKubeletInACluster(t *testing.T) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig()))
	b := openSim(t, "ws-2xrtx4090")
	a, err := agent.New(ctx, standaloneConfig(t, b))
	if err != nil {
		t.Fatal(err)
	}
	// Not running yet: no snapshot either.
	code, body := get(t, a.Handler(), "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]telemetry failed: no telemetry snapshot taken yet") {
		t.Errorf("/readyz before Run = %d\n%s\nwant 503 naming telemetry", code, body)
	}
}

// hangingEvents is a backend whose event watch ignores its context, as a
// driver call stuck in the kernel would.
type hangingEvents struct {
	gpu.Backend
	release chan struct{}
}

func (h hangingEvents) WatchEvents(context.Context, func(gpu.Event)) error {
	<-h.release
	return nil
}

// TestShutdownIsBounded: a component that does not stop does not hold the
// agent past ShutdownTimeout, and the error names it.
func TestShutdownIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())))
	defer cancel()
	b := hangingEvents{Backend: openSim(t, "ws-2xrtx4090"), release: make(chan struct{})}
	defer close(b.release)
	cfg := standaloneConfig(t, b)
	cfg.ShutdownTimeout = 200 * time.Millisecond
	a, err := agent.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	poll(t, "the first snapshot", func() bool { return a.Ready() == nil })
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "still running after 200ms: health") {
			t.Errorf("Run = %v, want an error naming the health loop still running", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return although its shutdown timeout passed")
	}
}

// TestComponentFailureStopsTheAgent: a component that fails stops the
// others, and Run returns its error.
func TestComponentFailureStopsTheAgent(t *testing.T) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig()))
	cfg := standaloneConfig(t, openSim(t, "ws-2xrtx4090"))
	cfg.MetricsAddress = "256.0.0.1:1" // cannot be listened on
	a, err := agent.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "metrics server: serving metrics on 256.0.0.1:1") {
			t.Errorf("Run = %v, want the metrics server's error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after a component failed")
	}
}

// TestLostGPUComesBack loses a simulated GPU (XID 79, then GPU_IS_LOST) and
// resets it: the agent withholds it while lost and advertises it healthy
// again once its probe sees it answer.
func TestLostGPUComesBack(t *testing.T) {
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig()))
	b := openSim(t, "pcie-4xl40s")
	cfg := standaloneConfig(t, b)
	cfg.LostGPUProbeInterval = 50 * time.Millisecond
	a := start(ctx, t, cfg)
	state := func(i int) gpu.HealthStatus { return a.Health()[i] }
	poll(t, "the event watch", func() bool { return b.Sim.Calls("RegisterEvents") >= 4 })
	if err := b.Sim.LoseGPU(1); err != nil {
		t.Fatal(err)
	}
	poll(t, "gpu 1 lost", func() bool { return state(1).Lost })
	if s := state(1); s.State != gpu.Unhealthy || !strings.Contains(s.Reason, "xid 79") {
		t.Errorf("gpu 1 = %+v, want unhealthy for xid 79", s)
	}
	poll(t, "a probe of the lost gpu", func() bool { return b.Sim.Calls("SystemGetDriverVersion") >= 3 })
	if s := state(1); !s.Lost {
		t.Fatalf("gpu 1 = %+v after probes while it is still lost, want lost", s)
	}
	if err := b.Sim.RecoverGPU(1); err != nil {
		t.Fatal(err)
	}
	poll(t, "gpu 1 healthy after its reset", func() bool { return state(1).State == gpu.Healthy })
	if s := state(1); s.Lost || !strings.Contains(s.Reason, "gpu reset detected") {
		t.Errorf("gpu 1 = %+v, want healthy after a detected reset", s)
	}
}
