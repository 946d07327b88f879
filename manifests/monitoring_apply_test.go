package manifests

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/k8stest/scrapeauth"
)

// TestMonitoringApply renders manifests/base and manifests/monitoring with
// kustomize, creates every object on a real API server (prometheus-operator's
// PodMonitor and PrometheusRule CRDs from charts/testdata first, so the
// monitoring objects meet the operator's schemas), runs
// kube-controller-manager's token controller, and holds gpu-scheduler's
// PodMonitor and the credentials it names to package scrapeauth's checks:
// the token that lands in the Secret it reads must be allowed GET /metrics
// and nothing else. Then it runs gpu-scheduler itself with the base's
// configuration, as the base's ServiceAccount and with delegated
// authentication and authorization as in its pod, and scrapes its secure
// port with that token, as Prometheus would.
func TestMonitoringApply(t *testing.T) {
	base := kustomizeBuild(t, "base")
	monitoring := kustomizeBuild(t, "monitoring")

	cp := k8stest.StartForTest(t)
	cfg := cp.RESTConfig()
	crds := filepath.Join("..", "charts", "testdata", "prometheus-operator-crds")
	applyManifests(t, cfg, filepath.Join(crds, "monitoring.coreos.com_podmonitors.yaml"), filepath.Join(crds, "monitoring.coreos.com_prometheusrules.yaml"))
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		rl, err := cp.Client().Discovery().ServerResourcesForGroupVersion("monitoring.coreos.com/v1")
		if err != nil {
			return false, nil //nolint:nilerr // not served yet: keep polling until the deadline
		}
		var served []string
		for _, r := range rl.APIResources {
			served = append(served, r.Name)
		}
		return slices.Contains(served, "podmonitors") && slices.Contains(served, "prometheusrules"), nil
	})
	if err != nil {
		t.Fatalf("prometheus-operator CRDs not served: %v", err)
	}
	scrapeauth.StartTokenController(t, cp)
	applyObjects(t, cfg, "base", base)
	applyObjects(t, cfg, "monitoring", monitoring)

	objs := append(slices.Clone(base), monitoring...)
	token := scrapeauth.CheckSchedulerPodMonitor(t.Context(), t, cp, objs, "tessera-system")
	scrapeauth.CheckRealScheduler(t.Context(), t, cp, objs, "tessera-system", token)
}
