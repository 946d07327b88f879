package inventory_test

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	testclock "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

const foreignLabel = "nvidia.com/foreign.tool"

// allocs is a settable PodResources view.
type allocs struct {
	mu      sync.Mutex
	holders []podresources.Holder
}

func (a *allocs) All() []podresources.Holder {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]podresources.Holder(nil), a.holders...)
}

func (a *allocs) set(h []podresources.Holder) {
	a.mu.Lock()
	a.holders = h
	a.mu.Unlock()
}

// harness is one node: a real kube-apiserver, a simulated DGX H100 behind
// the real device-plugin manager and health tracker, and a publisher on a
// fake clock.
type harness struct {
	t        *testing.T
	cp       *k8stest.ControlPlane
	kube     *kube.Client
	gpuNodes *client.Client
	clk      *testclock.FakeClock
	node     *corev1.Node
	sim      *simMachine
	opts     deviceplugin.Options
	mgr      *deviceplugin.Manager
	tracker  *health.Tracker
	pods     *allocs

	pub    *inventory.Publisher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// TestPublisher runs every publisher scenario against one control plane,
// each on its own node.
func TestPublisher(t *testing.T) {
	cp := k8stest.StartForTest(t)
	if err := inventorytest.InstallCRD(t.Context(), cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		test func(*testing.T, *harness)
	}{
		{"CreatesGPUNodeAndLabels", testCreates},
		{"WritesOnChangeAndHeartbeat", testChangeAndHeartbeat},
		{"NoWriteStormUnderPodChurn", testPodChurn},
		{"RestoresDeletedOrEditedGPUNode", testRestoresGPUNode},
		{"RestoresEditedLabels", testRestoresLabels},
		{"FollowsLayoutAndHealth", testLayoutAndHealth},
		{"RestartLeavesNothingStale", testRestart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.test(t, newHarness(t, cp, strings.ToLower(tc.name)))
		})
	}
}

func newHarness(t *testing.T, cp *k8stest.ControlPlane, nodeName string) *harness {
	t.Helper()
	ctx := t.Context()
	node, err := cp.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
			foreignLabel: "keep", "kubernetes.io/hostname": nodeName,
			inventory.MIGConfigLabel: "custom", inventory.MIGStateLabel: "success",
		}},
		Status: corev1.NodeStatus{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	kc, err := kube.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	gc, err := client.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := openSim(t, "dgx-h100")
	gputest.FillMIG(t, s.backend, 6, "3g.40gb", "2g.20gb", "1g.10gb")
	gputest.FillMIG(t, s.backend, 7, "7g.80gb")
	m := s.discover(t)
	clk := testclock.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	tracker := health.NewTracker(health.DefaultPolicy(), clk, deviceplugin.TrackedGPUs(m))
	h := &harness{t: t, cp: cp, kube: kc, gpuNodes: gc, clk: clk, node: node, sim: s, tracker: tracker,
		opts: deviceplugin.Options{MIGStrategy: deviceplugin.MIGStrategyMixed}, pods: &allocs{},
		mgr: deviceplugin.NewManager(deviceplugin.Config{PluginDir: t.TempDir()}, tracker)}
	if err := h.mgr.Update(m, h.opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start(tweak func(*inventory.Config)) {
	h.t.Helper()
	cfg := inventory.Config{
		NodeName: h.node.Name, Nodes: h.kube, GPUNodes: h.gpuNodes,
		Devices: h.mgr, Health: h.tracker, Pods: h.pods, MachineType: "DGXH100", Clock: h.clk,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	pub, err := inventory.NewPublisher(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.reg = prometheus.NewRegistry()
	if err := pub.Register(h.reg); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(h.t.Context()), ktesting.NewLogger(h.t, ktesting.NewConfig())))
	h.pub, h.cancel, h.done = pub, cancel, make(chan error, 1)
	go func() { h.done <- pub.Run(ctx) }()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	h.cancel = nil
}

// idle waits until the publisher's loop waits on its timer and ticker.
func (h *harness) idle() {
	h.t.Helper()
	h.poll("the publisher to wait", func() bool { return h.clk.Waiters() >= 2 })
}

func (h *harness) poll(what string, cond func() bool) {
	h.t.Helper()
	err := wait.PollUntilContextTimeout(h.t.Context(), 5*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		h.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// advanceUntil steps the fake clock a second at a time, letting the
// publisher settle after each step, until cond holds; it returns the
// simulated time that took.
func (h *harness) advanceUntil(what string, limit time.Duration, cond func() bool) time.Duration {
	h.t.Helper()
	begin := h.clk.Now()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if elapsed := h.clk.Since(begin); elapsed > limit {
			h.t.Fatalf("%s did not happen within %s of simulated time", what, limit)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s did not happen within 60s", what)
		}
		h.idle()
		h.clk.Step(time.Second)
		// Give the API server's answer and the watch a moment; cond is
		// polled, never slept on.
		_ = wait.PollUntilContextTimeout(h.t.Context(), 5*time.Millisecond, 200*time.Millisecond, true,
			func(context.Context) (bool, error) { return cond(), nil })
	}
	return h.clk.Since(begin)
}

// leaveMIG destroys GPU index's MIG devices and disables MIG mode.
func (h *harness) leaveMIG(index int) {
	h.t.Helper()
	ctx := h.t.Context()
	for _, m := range h.sim.discover(h.t).Devices[index].MIGDevices {
		if err := h.sim.backend.DestroyMIGDevice(ctx, index, m.GPUInstanceID); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.sim.backend.SetMIGMode(ctx, index, false); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) gpuNode() *v1alpha1.GPUNode {
	h.t.Helper()
	gn, err := h.gpuNodes.Get(h.t.Context(), h.node.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return gn
}

func (h *harness) nodeLabels() map[string]string {
	h.t.Helper()
	n, err := h.kube.GetNode(h.t.Context(), h.node.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	return n.Labels
}

// want is what the publisher should show for the current sources.
func (h *harness) want() (v1alpha1.GPUNodeStatus, map[string]string) {
	m, o, res := h.mgr.Advertised()
	s := inventory.Snapshot{Machine: m, Options: o, Resources: res, Health: h.tracker.States(),
		Holders: h.pods.All(), NodeLabels: h.nodeLabels(), MachineType: "DGXH100"}
	return inventory.BuildStatus(s), inventory.BuildLabels(s)
}

// published reports whether the GPUNode and the labels show want().
func (h *harness) published() bool {
	gn := h.gpuNode()
	if gn == nil {
		return false
	}
	st, labels := h.want()
	got := gn.Status
	got.HeartbeatTime, got.Layout.LastChangeTime = metav1.Time{}, nil
	if !cmp.Equal(st, got) {
		return false
	}
	node := h.nodeLabels()
	for k, v := range labels {
		if node[k] != v {
			return false
		}
	}
	return true
}

// writes reads tessera_inventory_writes_total{object, reason}.
func (h *harness) writes(object, reason string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tessera_inventory_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["object"] == object && l["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// statusWrites counts the GPUNode's MODIFIED watch events until stop.
type statusWrites struct {
	mu     sync.Mutex
	count  int
	lastRV string
}

func (h *harness) countWrites() (*statusWrites, func()) {
	h.t.Helper()
	gn := h.gpuNode()
	w, err := h.gpuNodes.Watch(h.t.Context(), metav1.ListOptions{
		FieldSelector: "metadata.name=" + h.node.Name, ResourceVersion: gn.ResourceVersion})
	if err != nil {
		h.t.Fatal(err)
	}
	sw := &statusWrites{lastRV: gn.ResourceVersion}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.ResultChan() {
			if e.Type == watch.Modified {
				sw.mu.Lock()
				sw.count++
				sw.lastRV = e.Object.(*v1alpha1.GPUNode).ResourceVersion
				sw.mu.Unlock()
			}
		}
	}()
	return sw, func() {
		// Every write so far has been delivered once the watch reached the
		// stored resourceVersion.
		rv := h.gpuNode().ResourceVersion
		h.poll("the watch to catch up", func() bool {
			sw.mu.Lock()
			defer sw.mu.Unlock()
			return sw.lastRV == rv
		})
		w.Stop()
		<-done
	}
}

func testCreates(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	gn := h.gpuNode()
	want := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: h.node.Name, UID: h.node.UID}}
	if diff := cmp.Diff(want, gn.OwnerReferences); diff != "" {
		t.Errorf("owner references (-want +got):\n%s", diff)
	}
	if gn.Status.Summary.GPUs != 8 || gn.Status.Summary.Allocation != "0/10" || gn.Status.HeartbeatTime.IsZero() {
		t.Errorf("summary %+v, heartbeat %v; want 8 GPUs, 0/10 allocated, a heartbeat", gn.Status.Summary, gn.Status.HeartbeatTime)
	}
	if gn.Status.Layout.Config != "custom" || gn.Status.Layout.LastChangeTime == nil {
		t.Errorf("layout %+v, want config custom with a change time", gn.Status.Layout)
	}
	labels := h.nodeLabels()
	if labels[foreignLabel] != "keep" || labels["nvidia.com/gpu.product"] != "NVIDIA-H100-80GB-HBM3" ||
		labels["nvidia.com/mig-7g.80gb.count"] != "1" || labels["nvidia.com/gpu.present"] != "true" {
		t.Errorf("node labels %v", labels)
	}
	n, err := h.kube.GetNode(t.Context(), h.node.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range n.ManagedFields {
		if mf.Manager == inventory.LabelFieldManager && mf.FieldsV1 != nil && strings.Contains(mf.FieldsV1.GetRawString(), foreignLabel) {
			t.Errorf("%s owns the foreign label %s", inventory.LabelFieldManager, foreignLabel)
		}
	}
	l, err := h.gpuNodes.List(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=" + h.node.Name})
	if err != nil || len(l.Items) != 1 {
		t.Errorf("listing GPUNodes: %d items, %v; want 1", len(l.Items), err)
	}
}

func testChangeAndHeartbeat(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	// Let the follow-ups of the first writes (watch events) settle.
	for range 6 {
		h.idle()
		h.clk.Step(time.Second)
	}
	sw, finish := h.countWrites()
	// A steady node for two simulated minutes: heartbeats only.
	for range 120 {
		h.idle()
		h.clk.Step(time.Second)
	}
	h.idle()
	finish()
	if sw.count < 3 || sw.count > 4 {
		t.Errorf("%d GPUNode writes in 2 minutes of steady state, want 4 (heartbeat every 30s)", sw.count)
	}
	t.Logf("steady state: %.1f GPUNode writes per minute", float64(sw.count)/2)
	if got := h.writes("labels", "change"); got != 1 {
		t.Errorf("%v label writes, want the first one only", got)
	}
	// A change is written without waiting for the heartbeat.
	uuid := h.mgr.Resources()[0].Devices[0].GPUUUID
	h.pods.set([]podresources.Holder{{Namespace: "ml", Pod: "p", Container: "c", Resource: "nvidia.com/gpu", DeviceID: uuid}})
	h.pub.Notify()
	took := h.advanceUntil("the allocation", 10*time.Second, h.published)
	if took > inventory.DefaultMinWriteInterval {
		t.Errorf("a change took %s of simulated time to publish, want at most MinWriteInterval %s", took, inventory.DefaultMinWriteInterval)
	}
}

func testPodChurn(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	for range 6 {
		h.idle()
		h.clk.Step(time.Second)
	}
	_, _, res := h.mgr.Advertised()
	var ids []string
	for _, r := range res {
		for _, d := range r.Devices {
			ids = append(ids, r.Name+"="+d.ID)
		}
	}
	sw, finish := h.countWrites()
	// 100 pods come and go within one simulated minute, each arrival and
	// departure notified at once: 200 changes.
	var live []podresources.Holder
	changes := 0
	for sec := range 60 {
		for k := range 2 {
			pod := sec*2 + k
			if pod < 100 {
				rid := ids[pod%len(ids)]
				name, id, _ := strings.Cut(rid, "=")
				live = append(live, podresources.Holder{Namespace: "churn", Pod: "pod-" + strconv.Itoa(pod),
					Container: "main", Resource: name, DeviceID: id})
				changes++
			}
			if len(live) > 8 || pod >= 100 && len(live) > 0 {
				live = live[1:]
				changes++
			}
			h.pods.set(append([]podresources.Holder(nil), live...))
			h.pub.Notify()
		}
		h.idle()
		h.clk.Step(time.Second)
	}
	h.idle()
	finish()
	t.Logf("pod churn: %d changes in one simulated minute -> %d GPUNode writes", changes, sw.count)
	if max := int(time.Minute/inventory.DefaultMinWriteInterval) + 1; sw.count > max {
		t.Errorf("%d GPUNode writes in a minute of churn, want at most %d (one per MinWriteInterval)", sw.count, max)
	}
	if sw.count < 2 {
		t.Errorf("%d GPUNode writes in a minute of churn: changes were not published", sw.count)
	}
	h.advanceUntil("the last state", 10*time.Second, h.published)
}

func testRestoresGPUNode(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	old := h.gpuNode()
	if err := h.gpuNodes.Delete(t.Context(), h.node.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	took := h.advanceUntil("the GPUNode to come back", inventory.DefaultHeartbeatInterval, func() bool {
		gn := h.gpuNode()
		return gn != nil && gn.UID != old.UID && h.published()
	})
	t.Logf("deleted GPUNode restored after %s of simulated time", took)

	// A hand edit of the status, by another field manager.
	patch := []byte(`{"status":{"summary":{"gpus":99,"allocation":"9/9"},"gpus":[]}}`)
	if err := h.gpuNodes.RESTClient().Patch(types.MergePatchType).Resource(v1alpha1.Resource).Name(h.node.Name).
		SubResource("status").Param("fieldManager", "kubectl-edit").Body(patch).Do(t.Context()).Error(); err != nil {
		t.Fatal(err)
	}
	if gn := h.gpuNode(); gn.Status.Summary.GPUs != 99 {
		t.Fatalf("the hand edit did not land: %+v", gn.Status.Summary)
	}
	took = h.advanceUntil("the edited status to be restored", inventory.DefaultHeartbeatInterval, h.published)
	t.Logf("edited GPUNode restored after %s of simulated time", took)
}

func testRestoresLabels(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	patch := []byte(`{"metadata":{"labels":{"nvidia.com/gpu.product":"hand-edited","nvidia.com/gpu.count":null,"nvidia.com/other.tool":"mine"}}}`)
	if _, err := h.kube.PatchNode(t.Context(), h.node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
		t.Fatal(err)
	}
	took := h.advanceUntil("the labels to be restored", inventory.DefaultHeartbeatInterval, h.published)
	t.Logf("edited labels restored after %s of simulated time", took)
	if l := h.nodeLabels(); l["nvidia.com/other.tool"] != "mine" || l[foreignLabel] != "keep" {
		t.Errorf("foreign labels changed: %v", l)
	}
}

func testLayoutAndHealth(t *testing.T, h *harness) {
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	before := h.gpuNode().Status.Layout.LastChangeTime

	// An injected XID makes GPU 2 unhealthy with its reason.
	uuid2 := h.gpuNode().Status.GPUs[2].UUID
	h.tracker.Observe(gpu.Event{Kind: gpu.EventXID, XID: 48, Index: 2, UUID: uuid2, GPUInstanceID: -1, ComputeInstanceID: -1})
	h.pub.Notify()
	h.advanceUntil("GPU 2 to be unhealthy", 10*time.Second, func() bool {
		g := h.gpuNode().Status.GPUs[2]
		return g.Health == v1alpha1.Unhealthy && strings.Contains(g.HealthReason, "48") && h.published()
	})
	if got := h.gpuNode().Status.Summary.UnhealthyGPUs; got != 1 {
		t.Errorf("summary counts %d unhealthy GPUs, want 1", got)
	}
	h.tracker.ObserveReset(2)
	h.pub.Notify()
	h.advanceUntil("GPU 2 to recover", 10*time.Second, func() bool {
		return h.gpuNode().Status.GPUs[2].Health == v1alpha1.Healthy && h.published()
	})

	// A MIG relabel: GPU 7 leaves MIG mode, GPU 0 enters it.
	h.leaveMIG(7)
	gputest.FillMIG(t, h.sim.backend, 0, "1g.10gb", "1g.10gb")
	if err := h.mgr.Update(h.sim.discover(t), h.opts); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"nvidia.com/mig.config":"custom-2","nvidia.com/mig.config.state":"success"}}}`)
	if _, err := h.kube.PatchNode(t.Context(), h.node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "tessera-gpu-agent"}); err != nil {
		t.Fatal(err)
	}
	h.advanceUntil("the new layout", 10*time.Second, h.published)
	gn, labels := h.gpuNode(), h.nodeLabels()
	if gn.Status.Layout.Config != "custom-2" || !gn.Status.Layout.LastChangeTime.After(before.Time) {
		t.Errorf("layout %+v, want custom-2 changed after %v", gn.Status.Layout, before)
	}
	for k := range labels {
		if strings.HasPrefix(k, "nvidia.com/mig-7g.80gb.") {
			t.Errorf("stale label %s=%s after GPU 7 left MIG mode", k, labels[k])
		}
	}
	if labels["nvidia.com/mig-1g.10gb.count"] != "3" || labels[foreignLabel] != "keep" || labels[inventory.MIGStateLabel] != "success" {
		t.Errorf("labels after the relabel: %v", labels)
	}
}

func testRestart(t *testing.T, h *harness) {
	uuid := func(i int) string { m, _, _ := h.mgr.Advertised(); return m.Devices[i].UUID }
	h.pods.set([]podresources.Holder{
		{Namespace: "ml", Pod: "a", Container: "c", Resource: "nvidia.com/gpu", DeviceID: uuid(0)},
		{Namespace: "ml", Pod: "b", Container: "c", Resource: "nvidia.com/gpu", DeviceID: uuid(1)},
	})
	h.start(nil)
	h.advanceUntil("the first publication", 10*time.Second, h.published)
	h.stop()

	// While the agent is down, a pod ends and GPU 7 leaves MIG mode.
	h.pods.set(h.pods.All()[1:])
	h.leaveMIG(7)
	if err := h.mgr.Update(h.sim.discover(t), h.opts); err != nil {
		t.Fatal(err)
	}
	h.start(nil)
	h.advanceUntil("the restarted publisher's publication", 10*time.Second, h.published)
	l, err := h.gpuNodes.List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, gn := range l.Items {
		if gn.Name == h.node.Name {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d GPUNodes named %s after a restart, want 1", n, h.node.Name)
	}
	gn := h.gpuNode()
	if len(gn.Status.Allocations) != 1 || gn.Status.Allocations[0].Pod != "b" {
		t.Errorf("allocations after a restart: %+v, want pod b only", gn.Status.Allocations)
	}
	_, want := h.want()
	got := map[string]string{}
	for k, v := range h.nodeLabels() {
		if strings.HasPrefix(k, "nvidia.com/") && k != foreignLabel && k != inventory.MIGConfigLabel && k != inventory.MIGStateLabel {
			got[k] = v
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("labels after a restart differ from the labels of the machine:\n%s", cmp.Diff(want, got))
	}
}
