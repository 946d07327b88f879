package charts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/k8stest/scrapeauth"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

const chartDir = "tessera"

// requireHelm returns the helm binary: $TESSERA_HELM (the Makefile passes the
// pinned one it installs into bin/), else helm on PATH. Without it the test
// skips, and under TESSERA_REQUIRE_TOOLS=1 (CI) it fails.
func requireHelm(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TESSERA_HELM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TESSERA_HELM=%s: %v", p, err)
		}
		return p
	}
	p, err := exec.LookPath("helm")
	if err == nil {
		return p
	}
	if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
		t.Fatalf("helm not found and TESSERA_REQUIRE_TOOLS=1 (make chart-test installs the pinned helm into bin/): %v", err)
	}
	t.Skipf("helm not installed (make chart-test installs it into bin/ from the Go module proxy): %v", err)
	return ""
}

// render runs helm template with the extra flags (--values, --set) and
// returns the rendered objects, CRDs included.
func render(t *testing.T, helm, namespace string, flags ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", "tessera", chartDir, "--namespace", namespace, "--include-crds"}, flags...)
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatalf("decoding a rendered object: %v\n%s", err, doc)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
	return objs
}

// applier applies objects with server-side apply, as
// `kubectl apply --server-side` would, resolving kinds through discovery.
type applier struct {
	mapper *restmapper.DeferredDiscoveryRESTMapper
	dyn    dynamic.Interface
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), dyn: dyn}
}

func (a *applier) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			return nil, fmt.Errorf("namespaced %s %s has no namespace", obj.GetKind(), obj.GetName())
		}
		return a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	res, err := a.resource(obj)
	if err != nil {
		return err
	}
	data, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = res.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "chart-test", Force: ptr.To(true)})
	return err
}

// established waits until every CRD in objs is served.
func (a *applier) established(ctx context.Context, crds []*unstructured.Unstructured) error {
	for _, crd := range crds {
		res, err := a.resource(crd)
		if err != nil {
			return err
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := res.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // keep polling until the deadline
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("crd %s not established: %w", crd.GetName(), err)
		}
	}
	a.mapper.Reset()
	return nil
}

// readManifest decodes the objects of a manifest file.
func readManifest(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func convert[T any](t *testing.T, obj *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
	return out
}

// TestChart renders the chart for its default values and each values file
// of ci/, applies every rendered object to a real kube-apiserver (the GPUNode
// CRD from crds/, prometheus-operator's CRDs for the monitoring objects), and
// checks what the values select. With monitoring on, the token controller
// of kube-controller-manager fills in the scheduler scrape's token Secret, and
// that token must be allowed GET /metrics (package scrapeauth); gpu-scheduler
// itself then runs with the chart's configuration, as the chart's
// ServiceAccount, and serves its /metrics to that token and to no other.
func TestChart(t *testing.T) {
	helm := requireHelm(t)
	cp := k8stest.StartForTest(t)
	ctx := t.Context()
	a := newApplier(t, cp.RESTConfig())
	scrapeauth.StartTokenController(t, cp)

	// The monitoring objects are validated against prometheus-operator's schemas.
	var operatorCRDs []*unstructured.Unstructured
	for _, f := range []string{"monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"} {
		operatorCRDs = append(operatorCRDs, readManifest(t, filepath.Join("testdata", "prometheus-operator-crds", f))...)
	}
	for _, crd := range operatorCRDs {
		if err := a.apply(ctx, crd); err != nil {
			t.Fatalf("applying crd %s: %v", crd.GetName(), err)
		}
	}
	if err := a.established(ctx, operatorCRDs); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		namespace   string
		valuesFile  string
		wantTag     string
		wantKinds   map[string]int
		wantSched   string // the scheduler profile's name; "" without the scheduler
		wantLease   string // namespace/name of the scheduler's leader-election Lease
		wantKubelet string
		wantScrape  bool // gpu-scheduler's PodMonitor and its credentials
	}{
		{
			name: "default values", namespace: "tessera-system", wantTag: "v0.1.0",
			wantKinds: map[string]int{
				"CustomResourceDefinition": 1, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
				"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1, "ConfigMap": 2, "DaemonSet": 1,
			},
			wantKubelet: "/var/lib/kubelet",
		},
		{
			name: "second scheduler and monitoring", namespace: "gpu-system", valuesFile: "second-scheduler-values.yaml", wantTag: "v0.1.0-ci",
			wantKinds: map[string]int{
				"CustomResourceDefinition": 1, "ServiceAccount": 3, "ClusterRole": 3, "ClusterRoleBinding": 5, "Role": 1, "RoleBinding": 2,
				"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1, "ConfigMap": 4, "DaemonSet": 1, "Deployment": 1,
				"PodMonitor": 2, "PrometheusRule": 1, "Secret": 1,
			},
			wantSched: "tessera-gpu-scheduler", wantLease: "gpu-system/tessera-gpu-scheduler", wantKubelet: "/var/lib/kubelet",
			wantScrape: true,
		},
		{
			name: "default profile", namespace: "tessera-system", valuesFile: "default-profile-values.yaml", wantTag: "v0.1.0",
			wantKinds: map[string]int{
				"CustomResourceDefinition": 1, "ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 4, "RoleBinding": 1,
				"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1, "ConfigMap": 3, "DaemonSet": 1, "Deployment": 1,
			},
			wantSched: "default-scheduler", wantLease: "kube-system/kube-scheduler", wantKubelet: "/var/lib/k0s/kubelet",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var values []string
			if tt.valuesFile != "" {
				values = append(values, "--values", filepath.Join(chartDir, "ci", tt.valuesFile))
			}
			objs := render(t, helm, tt.namespace, values...)
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.GetKind()]++
			}
			if d := cmp.Diff(tt.wantKinds, kinds); d != "" {
				t.Errorf("rendered kinds (-want +got):\n%s", d)
			}

			// Every object is accepted by the API server: the CRDs first.
			ns := &unstructured.Unstructured{}
			ns.SetAPIVersion("v1")
			ns.SetKind("Namespace")
			ns.SetName(tt.namespace)
			if err := a.apply(ctx, ns); err != nil {
				t.Fatal(err)
			}
			var crds, rest []*unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() == "CustomResourceDefinition" {
					crds = append(crds, o)
				} else {
					rest = append(rest, o)
				}
			}
			for _, o := range crds {
				if err := a.apply(ctx, o); err != nil {
					t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if err := a.established(ctx, crds); err != nil {
				t.Fatal(err)
			}
			for _, o := range rest {
				if err := a.apply(ctx, o); err != nil {
					t.Errorf("applying %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
			}

			checkImages(t, objs, tt.wantTag)
			if tt.valuesFile == "" {
				// The kustomize base runs the image the chart's default does.
				for _, f := range []string{"gpu-agent-daemonset.yaml", "gpu-scheduler-deployment.yaml"} {
					checkImages(t, readManifest(t, filepath.Join("..", "manifests", "base", f)), tt.wantTag)
				}
			}
			checkAgent(t, objs, tt.namespace, tt.wantKubelet)
			checkScheduler(t, objs, tt.wantSched, tt.wantLease)
			if tt.wantScrape {
				token := scrapeauth.CheckSchedulerPodMonitor(ctx, t, cp, objs, tt.namespace)
				scrapeauth.CheckRealScheduler(ctx, t, cp, objs, tt.namespace, token)
			} else if find(objs, "PodMonitor", scrapeauth.PodMonitorName) != nil {
				t.Errorf("PodMonitor %s rendered without monitoring and the scheduler", scrapeauth.PodMonitorName)
			}
		})
	}
}

// TestChartSchedulerPodMonitorValues renders gpu-scheduler's PodMonitor for
// the values that shape it: off unless monitoring.podMonitor, the scheduler
// and monitoring.podMonitor.scheduler are all on; the chart's own token
// Secret and reader RBAC, or only a reference to a Secret the user manages.
func TestChartSchedulerPodMonitorValues(t *testing.T) {
	helm := requireHelm(t)
	reader := []string{"ServiceAccount/tessera-metrics-reader", "Secret/tessera-metrics-reader-token",
		"ClusterRole/tessera-metrics-reader", "ClusterRoleBinding/tessera-metrics-reader"}
	tests := []struct {
		name       string
		set        string
		wantSecret string // the Secret the PodMonitor reads; "" for no PodMonitor
		wantKey    string
		wantReader bool // the chart creates the reader's ServiceAccount, Secret and RBAC
		wantTLS    map[string]any
	}{
		{name: "monitoring off", set: "scheduler.enabled=true"},
		{name: "scheduler off", set: "monitoring.podMonitor.enabled=true"},
		{name: "scheduler's PodMonitor off", set: "scheduler.enabled=true,monitoring.podMonitor.enabled=true,monitoring.podMonitor.scheduler.enabled=false"},
		{
			name: "chart-made token", set: "scheduler.enabled=true,monitoring.podMonitor.enabled=true",
			wantSecret: "tessera-metrics-reader-token", wantKey: "token", wantReader: true,
			wantTLS: map[string]any{"insecureSkipVerify": true},
		},
		{
			name: "user's token Secret and CA",
			set: "scheduler.enabled=true,monitoring.podMonitor.enabled=true,monitoring.podMonitor.scheduler.tokenSecret.create=false," +
				"monitoring.podMonitor.scheduler.tokenSecret.name=prometheus-scrape,monitoring.podMonitor.scheduler.tokenSecret.key=bearer," +
				"monitoring.podMonitor.scheduler.tlsConfig.insecureSkipVerify=null,monitoring.podMonitor.scheduler.tlsConfig.ca.secret.name=sched-ca," +
				"monitoring.podMonitor.scheduler.tlsConfig.ca.secret.key=ca.crt",
			wantSecret: "prometheus-scrape", wantKey: "bearer",
			wantTLS: map[string]any{"ca": map[string]any{"secret": map[string]any{"name": "sched-ca", "key": "ca.crt"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, helm, "tessera-system", "--set", tt.set)
			for _, r := range reader {
				kind, name, _ := strings.Cut(r, "/")
				if got := find(objs, kind, name) != nil; got != tt.wantReader {
					t.Errorf("%s rendered: %v, want %v", r, got, tt.wantReader)
				}
			}
			pm := find(objs, "PodMonitor", scrapeauth.PodMonitorName)
			if tt.wantSecret == "" {
				if pm != nil {
					t.Fatalf("PodMonitor %s rendered", scrapeauth.PodMonitorName)
				}
				return
			}
			if pm == nil {
				t.Fatalf("no PodMonitor %s", scrapeauth.PodMonitorName)
			}
			eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
			if len(eps) != 1 {
				t.Fatalf("PodMonitor endpoints %v, want one", eps)
			}
			ep, _ := eps[0].(map[string]any)
			name, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
			key, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "key")
			if name != tt.wantSecret || key != tt.wantKey {
				t.Errorf("PodMonitor reads key %q of Secret %q, want %q of %q", key, name, tt.wantKey, tt.wantSecret)
			}
			if d := cmp.Diff(tt.wantTLS, ep["tlsConfig"]); d != "" {
				t.Errorf("tlsConfig (-want +got):\n%s", d)
			}
		})
	}
}

// checkImages: every container runs an image of the Makefile's repository
// with the wanted version tag, never latest.
func checkImages(t *testing.T, objs []*unstructured.Unstructured, wantTag string) {
	t.Helper()
	for _, o := range objs {
		var spec corev1.PodSpec
		switch o.GetKind() {
		case "DaemonSet":
			spec = convert[appsv1.DaemonSet](t, o).Spec.Template.Spec
		case "Deployment":
			spec = convert[appsv1.Deployment](t, o).Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			want := "ghcr.io/tessera-gpu/" + c.Name + ":" + wantTag
			if c.Image != want {
				t.Errorf("%s %s container %s runs %s, want %s", o.GetKind(), o.GetName(), c.Name, c.Image, want)
			}
		}
	}
}

// checkAgent compares what the chart shares with the kustomize base: the CRD,
// the agent's ClusterRole, the admission policy (with the release namespace),
// and the configs (the base's unless the values replace them; each parses).
func checkAgent(t *testing.T, objs []*unstructured.Unstructured, namespace, kubeletDir string) {
	t.Helper()
	base := filepath.Join("..", "manifests", "base")
	baseCRD := readManifest(t, filepath.Join(base, "crd", "gpu.tessera.dev_gpunodes.yaml"))[0]
	if d := cmp.Diff(baseCRD.Object, find(objs, "CustomResourceDefinition", baseCRD.GetName()).Object); d != "" {
		t.Errorf("the chart's GPUNode CRD differs from manifests/base's (run make generate) (-base +chart):\n%s", d)
	}
	baseRBAC := readManifest(t, filepath.Join(base, "gpu-agent-rbac.yaml"))
	wantRole := convert[rbacv1.ClusterRole](t, find(baseRBAC, "ClusterRole", "tessera-gpu-agent"))
	gotRole := convert[rbacv1.ClusterRole](t, find(objs, "ClusterRole", "tessera-gpu-agent"))
	if d := cmp.Diff(wantRole.Rules, gotRole.Rules); d != "" {
		t.Errorf("the chart's gpu-agent ClusterRole grants other than manifests/base's (-base +chart):\n%s", d)
	}
	binding := convert[rbacv1.ClusterRoleBinding](t, find(objs, "ClusterRoleBinding", "tessera-gpu-agent"))
	if want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tessera-gpu-agent", Namespace: namespace}}; !cmp.Equal(want, binding.Subjects) {
		t.Errorf("gpu-agent ClusterRoleBinding subjects = %+v, want %+v", binding.Subjects, want)
	}

	basePolicy := convert[admissionregistrationv1.ValidatingAdmissionPolicy](t,
		find(readManifest(t, filepath.Join(base, "gpu-agent-admission.yaml")), "ValidatingAdmissionPolicy", "tessera-gpu-agent-node-restriction"))
	policy := convert[admissionregistrationv1.ValidatingAdmissionPolicy](t, find(objs, "ValidatingAdmissionPolicy", "tessera-gpu-agent-node-restriction"))
	wantExpr := "request.userInfo.username == 'system:serviceaccount:" + namespace + ":tessera-gpu-agent'"
	if len(policy.Spec.MatchConditions) != 1 || policy.Spec.MatchConditions[0].Expression != wantExpr {
		t.Errorf("admission policy matchConditions = %+v, want one with %s", policy.Spec.MatchConditions, wantExpr)
	}
	basePolicy.Spec.MatchConditions = policy.Spec.MatchConditions
	if d := cmp.Diff(basePolicy.Spec, policy.Spec); d != "" {
		t.Errorf("the chart's admission policy differs from manifests/base's beyond the namespace (-base +chart):\n%s", d)
	}

	ds := convert[appsv1.DaemonSet](t, find(objs, "DaemonSet", "tessera-gpu-agent"))
	c := ds.Spec.Template.Spec.Containers[0]
	for _, want := range []string{
		"--device-plugin-dir=" + kubeletDir + "/device-plugins/",
		"--pod-resources-socket=" + kubeletDir + "/pod-resources/kubelet.sock",
		"--mig-config-file=/etc/tessera/mig/config.yaml",
	} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("gpu-agent args %v lack %s", c.Args, want)
		}
	}
	if ds.Spec.Template.Spec.ServiceAccountName != "tessera-gpu-agent" {
		t.Errorf("gpu-agent runs as %q, want the service account the policy names", ds.Spec.Template.Spec.ServiceAccountName)
	}

	// The configs: each parses, and the default is one of them.
	dpc := convert[corev1.ConfigMap](t, find(objs, "ConfigMap", "tessera-device-plugin-configs"))
	for key, value := range dpc.Data {
		if _, err := config.Parse([]byte(value)); err != nil {
			t.Errorf("device-plugin config %q: %v", key, err)
		}
	}
	var dflt string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--device-plugin-config-default="); ok {
			dflt = v
		}
	}
	if _, ok := dpc.Data[dflt]; !ok {
		t.Errorf("--device-plugin-config-default=%s names no key of tessera-device-plugin-configs (%v)", dflt, slices.Sorted(func(y func(string) bool) {
			for k := range dpc.Data {
				if !y(k) {
					return
				}
			}
		}))
	}
	migCM := convert[corev1.ConfigMap](t, find(objs, "ConfigMap", "tessera-mig-parted-config"))
	if _, err := mig.Parse([]byte(migCM.Data["config.yaml"]), "tessera-mig-parted-config config.yaml"); err != nil {
		t.Errorf("mig-parted config: %v", err)
	}
	if dflt == "default" { // the shipped configs: the base's, unchanged
		for _, f := range []string{"gpu-agent-config.yaml", "gpu-agent-mig-config.yaml"} {
			want := convert[corev1.ConfigMap](t, readManifest(t, filepath.Join(base, f))[0])
			got := convert[corev1.ConfigMap](t, find(objs, "ConfigMap", want.Name))
			if d := cmp.Diff(want.Data, got.Data); d != "" {
				t.Errorf("ConfigMap %s differs from manifests/base/%s (-base +chart):\n%s", want.Name, f, d)
			}
		}
	}
}

// checkScheduler decodes the KubeSchedulerConfiguration strictly and checks
// the mode's profile name, the TesseraGPU plugin and the leader-election Lease.
func checkScheduler(t *testing.T, objs []*unstructured.Unstructured, wantProfile, wantLease string) {
	t.Helper()
	cmObj := find(objs, "ConfigMap", "tessera-gpu-scheduler-config")
	if wantProfile == "" {
		if cmObj != nil || find(objs, "Deployment", "tessera-gpu-scheduler") != nil {
			t.Errorf("the scheduler is rendered with scheduler.enabled=false")
		}
		return
	}
	cm := convert[corev1.ConfigMap](t, cmObj)
	var cfg kubeschedulerv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("KubeSchedulerConfiguration: %v\n%s", err, cm.Data["config.yaml"])
	}
	if cfg.APIVersion != "kubescheduler.config.k8s.io/v1" || cfg.Kind != "KubeSchedulerConfiguration" {
		t.Errorf("scheduler config is %s %s", cfg.APIVersion, cfg.Kind)
	}
	if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName == nil || *cfg.Profiles[0].SchedulerName != wantProfile {
		t.Fatalf("scheduler profiles = %+v, want one named %s", cfg.Profiles, wantProfile)
	}
	p := cfg.Profiles[0]
	if p.Plugins == nil || len(p.Plugins.MultiPoint.Enabled) != 1 || p.Plugins.MultiPoint.Enabled[0].Name != "TesseraGPU" {
		t.Errorf("profile plugins = %+v, want TesseraGPU enabled at multiPoint", p.Plugins)
	}
	if len(p.PluginConfig) != 1 || p.PluginConfig[0].Name != "TesseraGPU" ||
		!bytes.Contains(p.PluginConfig[0].Args.Raw, []byte(`"kind":"TesseraArgs"`)) {
		t.Errorf("profile pluginConfig = %+v, want TesseraGPU's TesseraArgs", p.PluginConfig)
	}
	le := cfg.LeaderElection
	if le.LeaderElect == nil || !*le.LeaderElect || le.ResourceNamespace+"/"+le.ResourceName != wantLease {
		t.Errorf("leader election %+v, want on Lease %s", le, wantLease)
	}
	dep := convert[appsv1.Deployment](t, find(objs, "Deployment", "tessera-gpu-scheduler"))
	if dep.Spec.Template.Spec.ServiceAccountName != "tessera-gpu-scheduler" {
		t.Errorf("gpu-scheduler runs as %q", dep.Spec.Template.Spec.ServiceAccountName)
	}
}

// TestChartRefusesBadValues: values that would break the install fail the
// render with a message naming the value.
func TestChartRefusesBadValues(t *testing.T) {
	helm := requireHelm(t)
	tests := []struct {
		name string
		set  string
		want string
	}{
		{"latest tag", "image.tag=latest", `image.tag must be a version such as v0.1.0, not "latest"`},
		{"unknown scheduler mode", "scheduler.enabled=true,scheduler.mode=replace", `scheduler.mode must be second or default-profile, not "replace"`},
		{"unknown drain policy", "agent.mig.drainPolicy=delete", `agent.mig.drainPolicy must be wait, evict or fail, not "delete"`},
		{"unknown share policy", "agent.sharePolicy=spread", `agent.sharePolicy must be packed or distributed, not "spread"`},
		{
			"chart-made token under another key", "scheduler.enabled=true,monitoring.podMonitor.enabled=true,monitoring.podMonitor.scheduler.tokenSecret.key=bearer",
			`monitoring.podMonitor.scheduler.tokenSecret.key must be token when tokenSecret.create is true (the key the token controller writes), not "bearer"`,
		},
		{
			"no token Secret", "scheduler.enabled=true,monitoring.podMonitor.enabled=true,monitoring.podMonitor.scheduler.tokenSecret.name=",
			"monitoring.podMonitor.scheduler.tokenSecret.name must name the Secret holding the scrape's bearer token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(helm, "template", "tessera", chartDir, "--set", tt.set).CombinedOutput()
			if err == nil {
				t.Fatalf("helm template --set %s succeeded", tt.set)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("helm template --set %s says\n%s\nwant it to contain %q", tt.set, out, tt.want)
			}
		})
	}
}
