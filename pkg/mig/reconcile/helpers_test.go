package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	tagent "github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

const (
	migConfigFile = "testdata/dgx-h100.yaml"
	// mixedConfig advertises MIG devices under their own resource names.
	mixedConfig = "version: v1\nflags:\n  migStrategy: mixed\n"
	// sharedConfig time-slices whole GPUs in two.
	sharedConfig = "version: v1\nflags:\n  migStrategy: mixed\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"
)

// node is one simulated GPU node: a Node object in the API server, a
// simulated DGX H100, a PodResources server and the files an agent reads.
type node struct {
	t       testing.TB
	cp      *k8stest.ControlPlane
	client  kubernetes.Interface
	name    string
	sim     *sim.Machine
	opened  *backend.Opened
	pods    *podresourcestest.Server
	dpDir   string
	journal string
	migFile string

	mu      sync.Mutex
	holding map[string]podresourcestest.Pod
}

func newNode(t testing.TB, cp *k8stest.ControlPlane, name string, labels map[string]string) *node {
	t.Helper()
	ctx := t.Context()
	client := clientFor(t, cp)
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opened, err := backend.Open(ctx, "sim:dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = opened.Close() })
	dir := t.TempDir()
	dpDir := filepath.Join(dir, "device-plugin")
	if err := os.Mkdir(dpDir, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"mixed": mixedConfig, "shared": sharedConfig} {
		if err := os.WriteFile(filepath.Join(dpDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	migFile, err := filepath.Abs(migConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	return &node{
		t: t, cp: cp, client: client, name: name, sim: opened.Sim, opened: opened,
		pods: podresourcestest.Start(t), dpDir: dpDir, journal: filepath.Join(dir, "mig-journal.json"),
		migFile: migFile, holding: map[string]podresourcestest.Pod{},
	}
}

// agent is one gpu-agent process, built through pkg/agent as
// cmd/gpu-agent builds it, with no kubelet (device-plugin registration is
// retried in the background) and the node's PodResources server.
type agent struct {
	*tagent.Agent
	cancel context.CancelFunc
	done   chan error
}

type agentOption func(*tagent.Config)

func withDrain(p reconcile.DrainPolicy, timeout time.Duration) agentOption {
	return func(c *tagent.Config) { c.MIGDrain, c.MIGDrainTimeout = p, timeout }
}

// withoutMIGConfigFile runs the agent with no MIG config file: it follows
// only the sharing label.
func withoutMIGConfigFile(c *tagent.Config) { c.MIGConfigFile = "" }

// startAgent starts an agent on n with the backend b (nil opens a new NVML
// backend over the node's simulated machine, as a restarted process does).
func (n *node) startAgent(b gpu.Backend, opts ...agentOption) *agent {
	t := n.t
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2)))
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	if b == nil {
		b = n.newBackend()
	}
	cfg := tagent.Config{
		Backend:                   b,
		Client:                    agentClientFor(t, n.cp),
		NodeName:                  n.name,
		PluginDir:                 t.TempDir(),
		DevicePluginConfigDir:     n.dpDir,
		DevicePluginConfigDefault: "mixed",
		MIGConfigFile:             n.migFile,
		MIGJournal:                n.journal,
		MIGDrainTimeout:           2 * time.Second,
		MIGApplyTimeout:           20 * time.Second,
		MIGDrainPollInterval:      20 * time.Millisecond,
		PodResourcesSocket:        n.pods.Socket(),
		Registry:                  prometheus.NewPedanticRegistry(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	ag, err := tagent.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a := &agent{Agent: ag, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- ag.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// newBackend opens another NVML backend over the node's simulated machine,
// as a restarted agent process does.
func (n *node) newBackend() gpu.Backend {
	n.t.Helper()
	nb, err := nvmlbackend.New(n.sim.NVML(), nvmlbackend.WithName("sim:dgx-h100"))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = nb.Close() })
	return nb
}

// kill stops the agent as a killed process stops: its work in progress is
// left where it is and Run is not waited for.
func (a *agent) kill() {
	a.cancel()
	a.cancel = nil
}

// stop ends the agent and waits for Run to return.
func (a *agent) stop(t testing.TB) {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	if err := <-a.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// label sets (or, for "", removes) node labels.
func (n *node) label(kv ...string) {
	n.t.Helper()
	labels := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			labels[kv[i]] = nil
		} else {
			labels[kv[i]] = kv[i+1]
		}
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":%s}}`, mustJSON(n.t, labels))
	if _, err := n.client.CoreV1().Nodes().Patch(context.Background(), n.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
		n.t.Fatal(err)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// clientFor returns the test's own client, for fixtures and checks, with a
// rate limit that test polling cannot exhaust.
func clientFor(t testing.TB, cp *k8stest.ControlPlane) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(testRESTConfig(cp))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentClientFor returns an agent's client, the one cmd/gpu-agent uses.
func agentClientFor(t testing.TB, cp *k8stest.ControlPlane) *kube.Client {
	t.Helper()
	c, err := kube.NewForConfig(testRESTConfig(cp))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testRESTConfig(cp *k8stest.ControlPlane) *rest.Config {
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = 500, 1000
	return cfg
}

// poll waits up to 30s for cond.
func poll(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (n *node) labels() map[string]string {
	n.t.Helper()
	got, err := n.client.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	return got.Labels
}

// waitState waits for the MIG state label to become state for config want.
func (n *node) waitState(key, want, state string) {
	n.t.Helper()
	config := reconcile.MIGConfigLabel
	if key == reconcile.SharingStateLabel {
		config = reconcile.SharingConfigLabel
	}
	poll(n.t, fmt.Sprintf("%s=%s for %s", key, state, want), func() (bool, error) {
		l := n.labels()
		return l[config] == want && l[key] == state, nil
	})
}

// labelWatch records every version of a node's labels through a watch.
type labelWatch struct {
	mu      sync.Mutex
	history []map[string]string
	changed chan struct{}
}

// mark is the position of the next version.
func (lw *labelWatch) mark() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.history)
}

func (n *node) watchLabels() *labelWatch {
	n.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.t.Cleanup(cancel)
	w, err := n.client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", n.name).String()})
	if err != nil {
		n.t.Fatal(err)
	}
	lw := &labelWatch{changed: make(chan struct{}, 1)}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			nd, ok := ev.Object.(*v1.Node)
			if !ok {
				continue
			}
			lw.mu.Lock()
			lw.history = append(lw.history, nd.Labels)
			lw.mu.Unlock()
			select {
			case lw.changed <- struct{}{}:
			default:
			}
		}
	}()
	return lw
}

// states is every value the MIG state label took, in order, without
// consecutive repeats.
func (lw *labelWatch) states() []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var out []string
	for _, l := range lw.history {
		if v := l[reconcile.MIGStateLabel]; len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

// layout describes the simulated machine's MIG layout per GPU.
func (n *node) layout() []string {
	n.t.Helper()
	m, err := n.opened.Discover(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return describeLayout(m)
}

func describeLayout(m *gpu.Machine) []string {
	out := make([]string, 0, len(m.Devices))
	for _, d := range m.Devices {
		if !d.MIGEnabled {
			out = append(out, "disabled")
			continue
		}
		var ps []string
		for _, md := range d.MIGDevices {
			ps = append(ps, fmt.Sprintf("%s@%d", md.Profile, md.Placement.Start))
		}
		slices.Sort(ps)
		out = append(out, "enabled:"+strings.Join(ps, ","))
	}
	return out
}

// counts is how many device IDs the agent's device plugin advertises per resource.
func counts(a *agent) map[string]int {
	out := map[string]int{}
	for _, r := range a.Resources() {
		out[r.Name] = len(r.Devices)
	}
	return out
}

// waitEvent waits for an Event on the node with reason whose message holds every part.
func (n *node) waitEvent(reason string, parts ...string) {
	n.t.Helper()
	poll(n.t, fmt.Sprintf("a %s event mentioning %q", reason, parts), func() (bool, error) {
		return n.hasEvent(reason, parts...), nil
	})
}

func (n *node) hasEvent(reason string, parts ...string) bool {
	n.t.Helper()
	evs, err := n.client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
next:
	for _, e := range evs.Items {
		if e.InvolvedObject.Name != n.name || e.Reason != reason {
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
}

// hold makes the kubelet report that pod ns/name holds device ids of resource.
func (n *node) hold(ns, name, resource string, ids ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.holding[ns+"/"+name] = podresourcestest.Pod{Namespace: ns, Name: name, Containers: []podresourcestest.Container{
		{Name: "main", Devices: []podresourcestest.Device{{Resource: resource, IDs: ids}}},
	}}
	n.syncPods()
}

// release makes the kubelet forget pod ns/name.
func (n *node) release(ns, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.holding, ns+"/"+name)
	n.syncPods()
}

func (n *node) syncPods() {
	pods := make([]podresourcestest.Pod, 0, len(n.holding))
	for _, k := range slices.Sorted(mapKeys(n.holding)) {
		pods = append(pods, n.holding[k])
	}
	n.pods.SetPods(pods...)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// runKubelet stands in for the node's kubelet: a pod of the node that is
// being deleted (as an eviction does) stops holding its devices and is removed.
func (n *node) runKubelet(ctx context.Context) {
	n.t.Helper()
	w, err := n.client.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.name).String()})
	if err != nil {
		n.t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*v1.Pod)
			if !ok || p.DeletionTimestamp == nil {
				continue
			}
			n.release(p.Namespace, p.Name)
			zero := int64(0)
			err := n.client.CoreV1().Pods(p.Namespace).Delete(context.WithoutCancel(ctx), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			if err != nil && !apierrors.IsNotFound(err) {
				n.t.Errorf("deleting pod %s/%s: %v", p.Namespace, p.Name, err)
			}
		}
	}()
}

// runningPod creates a running pod on the node holding device ids.
func (n *node) runningPod(name string, labels map[string]string, resource string, ids ...string) {
	n.t.Helper()
	ctx := context.Background()
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault, Labels: labels},
		Spec:       v1.PodSpec{NodeName: n.name, Containers: []v1.Container{{Name: "main", Image: "cuda"}}},
	}
	created, err := n.client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	created.Status = v1.PodStatus{Phase: v1.PodRunning, Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}}}
	if _, err := n.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		n.t.Fatal(err)
	}
	n.hold(p.Namespace, name, resource, ids...)
}

func (n *node) podExists(name string) bool {
	n.t.Helper()
	p, err := n.client.CoreV1().Pods(metav1.NamespaceDefault).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		n.t.Fatal(err)
	}
	return p.DeletionTimestamp == nil
}
