package agent_test

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
)

// sharedConfig time-slices whole GPUs in two.
const sharedConfig = "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"

// TestAPIServerUnreachable runs an agent against a real kube-apiserver that
// is stopped at the agent's start and again while it runs. The agent starts
// anyway with the default device-plugin config, keeps serving the kubelet
// and /metrics, and when the API server returns catches up: the node
// label's config, its state label, and the Events recorded meanwhile.
func TestAPIServerUnreachable(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2))))
	client := cp.Client()
	const nodeName = "gpu-node"
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName,
		Labels: map[string]string{reconcile.SharingConfigLabel: "shared"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := standaloneConfig(t, openSim(t, "pcie-4xl40s"))
	cfg.NodeName = nodeName
	restCfg := cp.RESTConfig()
	restCfg.Timeout = 5 * time.Second
	kc, err := kube.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client = kc
	cfg.DevicePluginConfigDir = t.TempDir()
	for name, content := range map[string]string{"shared": sharedConfig, "whole": "version: v1\n"} {
		if err := os.WriteFile(filepath.Join(cfg.DevicePluginConfigDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.DevicePluginConfigDefault = "whole"
	cfg.NodeReadTimeout = time.Second

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	a := start(ctx, t, cfg)
	h := a.Handler()
	// Serving the default config, and /metrics.
	if got, want := counts(a.Agent), map[string]int{"nvidia.com/gpu": 4}; !maps.Equal(got, want) {
		t.Errorf("resources while the API server is down = %v, want the default config's %v", got, want)
	}
	poll(t, "the first snapshot", func() bool {
		code, body := get(t, h, "/metrics")
		return code == http.StatusOK && strings.Contains(body, "DCGM_FI_DEV_GPU_TEMP{")
	})
	// An Event recorded while the API server is down is written later.
	injectXID(t, cfg, 2, 48)

	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	poll(t, "the node label's config", func() bool {
		return maps.Equal(counts(a.Agent), map[string]int{"nvidia.com/gpu": 8})
	})
	poll(t, "the sharing state label", func() bool {
		n, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		return err == nil && n.Labels[reconcile.SharingStateLabel] == reconcile.StateSuccess
	})
	waitEvent(ctx, t, cp, nodeName, telemetry.ReasonFatalXID, "GPU 2", "fatal XID 48")

	// Later: down again while running.
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	injectXID(t, cfg, 1, 74)
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "DCGM_FI_DEV_GPU_TEMP{") {
		t.Errorf("/metrics while the API server is down again = %d", code)
	}
	if got, want := counts(a.Agent), map[string]int{"nvidia.com/gpu": 8}; !maps.Equal(got, want) {
		t.Errorf("resources while the API server is down again = %v, want %v", got, want)
	}
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, cp, nodeName, telemetry.ReasonFatalXID, "GPU 1", "fatal XID 74")
	// The node watch is back too: a relabel is followed.
	patch := `{"metadata":{"labels":{"` + reconcile.SharingConfigLabel + `":null}}}`
	if _, err := client.CoreV1().Nodes().Patch(ctx, nodeName, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the default config after the label was removed", func() bool {
		return maps.Equal(counts(a.Agent), map[string]int{"nvidia.com/gpu": 4})
	})
}

// injectXID injects an XID into the simulated machine behind cfg.Backend.
func injectXID(t *testing.T, cfg agent.Config, gpuIndex int, xid uint64) {
	t.Helper()
	b := cfg.Backend.(*backend.Opened)
	if err := b.Sim.InjectXID(gpuIndex, xid); err != nil {
		t.Fatal(err)
	}
}

// waitEvent waits for an Event on the node with reason whose message holds every part.
func waitEvent(ctx context.Context, t *testing.T, cp *k8stest.ControlPlane, node, reason string, parts ...string) {
	t.Helper()
	poll(t, "a "+reason+" Event mentioning "+strings.Join(parts, ", "), func() bool { //nolint:contextcheck // poll keeps its own deadline
		evs, err := cp.Client().CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
	next:
		for _, e := range evs.Items {
			if e.InvolvedObject.Name != node || e.Reason != reason || e.Source.Component != agent.EventComponent {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(e.Message, p) {
					continue next
				}
			}
			return true
		}
		return false
	})
}
