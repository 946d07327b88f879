package agent_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/kubelettest"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

// mixedConfig advertises MIG slices under their own resource names.
const mixedConfig = "version: v1\nflags:\n  migStrategy: mixed\n"

const migResource = "nvidia.com/mig-1g.10gb"

// TestEndToEnd runs the agent as the DaemonSet runs it, built by agent.New:
// a simulated DGX H100, a real kube-apiserver with the GPUNode CRD, the
// kubelet's own device manager (registration, ListAndWatch, Allocate) and
// the kubelet's PodResources server reading that device manager. It checks
// the acceptance, in order: the agent creates its GPUNode, owned by
// its Node, and the GFD labels; a MIG relabel changes the GPUNode's status
// and the mig-* labels; pods the kubelet allocated appear in the
// allocations; an injected XID marks the GPU unhealthy with its reason and
// the recovery period clears it; an agent stopped and started again while a
// pod ended leaves one GPUNode, no stale allocation or health, and its own
// labels only once.
func TestEndToEnd(t *testing.T) {
	kubelet := kubelettest.Start(t)
	cp := k8stest.StartForTest(t)
	ctx := klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2))))
	if err := inventorytest.InstallCRD(ctx, cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	const nodeName = "dgx-0"
	const foreign = "nvidia.com/foreign.tool"
	node, err := cp.Client().CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName,
		Labels: map[string]string{foreign: "keep"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gpuNodes, err := client.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	pods := podresourcestest.StartFrom(t, kubelet.ActivePods, kubelet.Manager())

	opened := openSim(t, "dgx-h100")
	dir := t.TempDir()
	dpDir := filepath.Join(dir, "device-plugin")
	if err := os.Mkdir(dpDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dpDir, "mixed"), []byte(mixedConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	migFile, err := filepath.Abs("testdata/mig-parted.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config := func(b gpu.Backend) agent.Config {
		kc, err := kube.NewForConfig(cp.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		gc, err := client.NewForConfig(cp.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		return agent.Config{
			Backend: b, Client: kc, GPUNodes: gc, NodeName: nodeName, MachineType: "DGXH100",
			PluginDir: kubelettest.PluginDir, DevicePluginConfigDir: dpDir, DevicePluginConfigDefault: "mixed",
			MIGConfigFile: migFile, MIGJournal: filepath.Join(dir, "mig-journal.json"),
			MIGDrainPollInterval: 20 * time.Millisecond, MIGApplyTimeout: 30 * time.Second,
			PodResourcesSocket: pods.Socket(), PodResourcesInterval: 50 * time.Millisecond,
			// A fatal XID is forgotten after a short recovery period, so that
			// the test sees recovery without a fake clock for every part.
			HealthPolicy: health.Policy{IgnoredXIDs: health.DefaultPolicy().IgnoredXIDs, RecoveryPeriod: 2 * time.Second},
			// Writes are spaced and the sources re-read at a tenth of a second
			// instead of 5 s; the heartbeat keeps its default (30 s) and plays
			// no part here: every write this test waits for is a change.
			InventoryMinWriteInterval: 100 * time.Millisecond, InventoryResyncInterval: 100 * time.Millisecond,
			Registry: prometheus.NewPedanticRegistry(),
		}
	}
	nodeWatches0 := watches(ctx, t, cp, "", "nodes")
	a1 := start(ctx, t, config(opened))

	gpuNode := func() *v1alpha1.GPUNode {
		gn, err := gpuNodes.Get(ctx, nodeName)
		if err != nil {
			return nil
		}
		return gn
	}
	labels := func() map[string]string {
		n, err := cp.Client().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Labels
	}

	// 1. The GPUNode, owned by the Node, and the GFD labels.
	poll(t, "the GPUNode with 8 whole GPUs", func() bool {
		gn := gpuNode()
		return gn != nil && gn.Status.Summary.GPUs == 8 && gn.Status.Summary.Allocation == "0/8"
	})
	// One watch of its Node (the layout reconciler and the publisher share
	// an informer), one of its GPUNode.
	poll(t, "one watch of the Node and one of the GPUNode", func() bool {
		return watches(ctx, t, cp, "", "nodes")-nodeWatches0 == 1 && watches(ctx, t, cp, v1alpha1.GroupName, "gpunodes") == 1
	})
	gn := gpuNode()
	if want := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: node.UID}}; !slices.Equal(gn.OwnerReferences, want) {
		t.Errorf("GPUNode owners = %+v, want the Node %+v", gn.OwnerReferences, want)
	}
	if gn.Status.Backend != "sim:dgx-h100" || gn.Status.MIGStrategy != "mixed" || gn.Status.GPUs[0].Product != "NVIDIA-H100-80GB-HBM3" {
		t.Errorf("GPUNode status: backend %q, MIG strategy %q, product %q", gn.Status.Backend, gn.Status.MIGStrategy, gn.Status.GPUs[0].Product)
	}
	poll(t, "the GFD labels", func() bool { return labels()["nvidia.com/gpu.count"] == "8" })
	wantLabels(t, labels(), map[string]string{
		"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559",
		"nvidia.com/gpu.machine": "DGXH100", "nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": "mixed",
		"nvidia.com/gpu.family": "hopper", "nvidia.com/gpu.compute.major": "9", foreign: "keep",
	})
	if got := migLabels(labels()); len(got) > 0 {
		t.Errorf("mig-* labels before any GPU is in MIG mode: %v", got)
	}

	// 2. A MIG relabel: every GPU split into seven 1g.10gb slices.
	patchLabels(ctx, t, cp, map[string]any{reconcile.MIGConfigLabel: "all-1g.10gb"})
	poll(t, "the all-1g.10gb layout in the GPUNode", func() bool {
		gn := gpuNode()
		if gn == nil || gn.Status.Layout.Config != "all-1g.10gb" || gn.Status.Layout.State != reconcile.StateSuccess ||
			gn.Status.Summary.Allocation != "0/56" {
			return false
		}
		for _, g := range gn.Status.GPUs {
			if !g.MIGEnabled || len(g.MIGSlices) != 7 || g.Sharing != nil {
				return false
			}
		}
		return true
	})
	if s := gpuNode().Status.GPUs[0].MIGSlices[6]; s.Profile != "1g.10gb" || s.Sharing == nil || s.Sharing.Resource != migResource || s.Placement.Start != 6 {
		t.Errorf("GPU 0's last slice = %+v, want a 1g.10gb slice at 6 advertised as %s", s, migResource)
	}
	poll(t, "the mig-1g.10gb labels", func() bool { return labels()["nvidia.com/mig-1g.10gb.count"] == "56" })
	wantLabels(t, labels(), map[string]string{
		"nvidia.com/mig-1g.10gb.memory": "9984", "nvidia.com/mig-1g.10gb.multiprocessors": "16",
		"nvidia.com/mig-1g.10gb.slices.gi": "1", "nvidia.com/gpu.count": "8", foreign: "keep",
	})

	// 3. Pods admitted through the kubelet's device manager.
	poll(t, "the kubelet to serve "+migResource, func() bool {
		_, alloc, _ := kubelet.Manager().GetCapacity()
		q := alloc[migResource]
		return q.Value() == 56
	})
	for _, p := range []*v1.Pod{gpuPod("train", 2), gpuPod("infer", 1)} {
		if err := kubelet.Admit(p); err != nil {
			t.Fatal(err)
		}
	}
	allocated := func(pod string) []string {
		p := podNamed(kubelet, pod)
		return slices.Sorted(maps.Keys(kubelet.Manager().GetDevices(string(p.UID), "main")[migResource]))
	}
	wantAllocs := []v1alpha1.Allocation{
		{Namespace: "ml", Pod: "infer", Container: "main", Resource: migResource, DeviceIDs: allocated("infer")},
		{Namespace: "ml", Pod: "train", Container: "main", Resource: migResource, DeviceIDs: allocated("train")},
	}
	poll(t, "the kubelet's allocations in the GPUNode", func() bool {
		gn := gpuNode()
		return gn != nil && equalAllocations(gn.Status.Allocations, wantAllocs) && gn.Status.Summary.Allocation == "3/56"
	})

	// 4. An injected XID, then recovery.
	poll(t, "the event watch", func() bool { return opened.Sim.Calls("RegisterEvents") >= 8 })
	if err := opened.Sim.InjectXID(3, 48); err != nil {
		t.Fatal(err)
	}
	poll(t, "GPU 3 unhealthy in the GPUNode", func() bool {
		gn := gpuNode()
		return gn != nil && gn.Status.GPUs[3].Health == v1alpha1.Unhealthy && gn.Status.Summary.UnhealthyGPUs == 1
	})
	g3 := gpuNode().Status.GPUs[3]
	if !strings.Contains(g3.HealthReason, "xid 48") || !strings.Contains(g3.HealthReason, "double bit ecc") {
		t.Errorf("GPU 3's health reason = %q, want it to name XID 48 (a double-bit ECC error)", g3.HealthReason)
	}
	for _, s := range g3.MIGSlices {
		if s.Health != v1alpha1.Unhealthy {
			t.Errorf("slice %s of unhealthy GPU 3 is %s", s.UUID, s.Health)
		}
	}
	if gpuNode().Status.GPUs[2].Health != v1alpha1.Healthy {
		t.Errorf("GPU 2 is unhealthy after an XID on GPU 3")
	}
	poll(t, "GPU 3 healthy again after the recovery period", func() bool {
		gn := gpuNode()
		return gn != nil && gn.Status.GPUs[3].Health == v1alpha1.Healthy && gn.Status.GPUs[3].HealthReason == "" &&
			gn.Status.Summary.UnhealthyGPUs == 0
	})

	// 5. The agent stops and, while it is down, a pod ends. The restarted
	// agent, a new process with a new NVML backend over the same machine,
	// publishes exactly what is there.
	stopped := gpuNode()
	if err := a1.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	kubelet.Forget("infer")
	restarted := openBackend(t, opened.Sim.NVML())
	start(ctx, t, config(restarted))
	wantAllocs = wantAllocs[1:]
	poll(t, "the restarted agent's GPUNode without the ended pod", func() bool {
		gn := gpuNode()
		return gn != nil && gn.ResourceVersion != stopped.ResourceVersion &&
			equalAllocations(gn.Status.Allocations, wantAllocs) && gn.Status.Summary.Allocation == "2/56"
	})
	list, err := gpuNodes.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].UID != stopped.UID {
		t.Errorf("%d GPUNodes after the restart, want the one from before (uid %s)", len(list.Items), stopped.UID)
	}
	gn = gpuNode()
	if len(gn.OwnerReferences) != 1 || gn.Status.Summary.UnhealthyGPUs != 0 ||
		!equality.Semantic.DeepEqual(gn.Status.Layout, stopped.Status.Layout) {
		t.Errorf("after the restart: owners %+v, %d unhealthy, layout %+v; want one owner, none unhealthy, layout %+v unchanged",
			gn.OwnerReferences, gn.Status.Summary.UnhealthyGPUs, gn.Status.Layout, stopped.Status.Layout)
	}
	if !slices.EqualFunc(gn.Status.GPUs, stopped.Status.GPUs, func(a, b v1alpha1.GPU) bool { return a.UUID == b.UUID && len(a.MIGSlices) == len(b.MIGSlices) }) {
		t.Errorf("GPUs changed across the restart")
	}
	n, err := cp.Client().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	managers := 0
	for _, mf := range n.ManagedFields {
		if mf.Manager == inventory.LabelFieldManager {
			managers++
		}
	}
	if managers != 1 {
		t.Errorf("%d managedFields entries of %s on the Node, want 1", managers, inventory.LabelFieldManager)
	}
	if l := n.Labels; l["nvidia.com/mig-1g.10gb.count"] != "56" || l[foreign] != "keep" || len(migLabels(l)) != len(migLabels(labels())) {
		t.Errorf("labels after the restart: %v", l)
	}
	poll(t, "the kubelet to serve 56 slices again", func() bool {
		c, _, _ := kubelet.Manager().GetCapacity()
		q := c[migResource]
		return q.Value() == 56
	})
}

// openBackend opens another NVML backend over a simulated machine, as a
// restarted agent process does.
func openBackend(t *testing.T, lib nvmlbackend.Library) gpu.Backend {
	t.Helper()
	b, err := nvmlbackend.New(lib, nvmlbackend.WithName("sim:dgx-h100"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func gpuPod(name string, slices int64) *v1.Pod {
	r := v1.ResourceList{migResource: *resource.NewQuantity(slices, resource.DecimalSI)}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", UID: types.UID("uid-" + name)},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "main", Image: "cuda",
			Resources: v1.ResourceRequirements{Limits: r, Requests: r}}}},
	}
}

func podNamed(k *kubelettest.Kubelet, name string) *v1.Pod {
	for _, p := range k.ActivePods() {
		if p.Name == name {
			return p
		}
	}
	panic("no active pod " + name)
}

// equalAllocations compares allocations ignoring their order and the pod UID.
func equalAllocations(got, want []v1alpha1.Allocation) bool {
	key := func(a v1alpha1.Allocation) string {
		ids := slices.Sorted(slices.Values(a.DeviceIDs))
		return fmt.Sprint(a.Namespace, "/", a.Pod, "/", a.Container, "/", a.Resource, "=", ids)
	}
	var g, w []string
	for _, a := range got {
		g = append(g, key(a))
	}
	for _, a := range want {
		w = append(w, key(a))
	}
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

func migLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if strings.HasPrefix(k, "nvidia.com/mig-") {
			out[k] = v
		}
	}
	return out
}

func wantLabels(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("label %s = %q, want %q", k, got[k], v)
		}
	}
}

func patchLabels(ctx context.Context, t *testing.T, cp *k8stest.ControlPlane, labels map[string]any) {
	t.Helper()
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%q:%q", k, v))
	}
	patch := `{"metadata":{"labels":{` + strings.Join(parts, ",") + `}}}`
	if _, err := cp.Client().CoreV1().Nodes().Patch(ctx, "dgx-0", types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kubectl-label"}); err != nil {
		t.Fatal(err)
	}
}

// watches is the number of watch requests on resource of group that the API
// server is serving (apiserver_longrunning_requests).
func watches(ctx context.Context, t *testing.T, cp *k8stest.ControlPlane, group, resource string) float64 {
	t.Helper()
	body, err := cp.Client().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("reading the API server's metrics: %v", err)
	}
	var n float64
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "apiserver_longrunning_requests{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `verb="WATCH"`) ||
			!strings.Contains(labels, fmt.Sprintf(`group=%q`, group)) || !strings.Contains(labels, fmt.Sprintf(`resource=%q`, resource)) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		n += v
	}
	return n
}
