package client_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

const manager = "tessera-gpu-agent"

// rig is a control plane with the CRD installed and one Node per test.
type rig struct {
	cp     *k8stest.ControlPlane
	client *client.Client
	node   *corev1.Node
}

// TestGPUNodeAPI starts one control plane for every check of the API, each
// on its own node.
func TestGPUNodeAPI(t *testing.T) {
	cp := k8stest.StartForTest(t)
	if err := inventorytest.InstallCRD(t.Context(), cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		test func(*testing.T, *rig)
	}{
		{"ApplyGetListWatch", testApplyGetListWatch},
		{"ApplyStatusNeedsTheObject", testApplyStatusNeedsTheObject},
		{"SchemaRejectsBadStatus", testSchemaRejectsBadStatus},
		{"Table", testTable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node, err := cp.Client().CoreV1().Nodes().Create(t.Context(), &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: strings.ToLower(tc.name)},
				Status:     corev1.NodeStatus{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating node: %v", err)
			}
			tc.test(t, &rig{cp: cp, client: c, node: node})
		})
	}
}

func ownedBy(n *corev1.Node) *v1alpha1.GPUNode {
	return &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID,
		}},
	}}
}

func healthyGPU(i int32, product string) v1alpha1.GPU {
	return v1alpha1.GPU{
		Index: i, UUID: "GPU-" + string('a'+i), Product: product, MemoryMiB: 81559,
		ComputeCapability: "9.0", Architecture: "hopper", PCIBusID: "0000:1b:00.0",
		NUMANode: ptr.To[int32](0), Health: v1alpha1.Healthy, MIGCapable: true,
		Sharing: &v1alpha1.Sharing{Resource: "nvidia.com/gpu", Replicas: 1},
	}
}

func sampleStatus(heartbeat time.Time) v1alpha1.GPUNodeStatus {
	mig := healthyGPU(1, "NVIDIA-H100-80GB-HBM3")
	mig.MIGEnabled, mig.Sharing = true, nil
	mig.Health, mig.HealthReason = v1alpha1.Unhealthy, "XID 79"
	mig.MIGSlices = []v1alpha1.MIGSlice{{
		UUID: "MIG-1", Profile: "3g.40gb", GPUInstanceID: 2, ComputeInstanceID: 0,
		Placement: v1alpha1.Placement{Start: 0, Size: 4}, MemoryMiB: 40448, Multiprocessors: 60,
		Health: v1alpha1.Unhealthy, HealthReason: "XID 79",
		Sharing: &v1alpha1.Sharing{Resource: "nvidia.com/mig-3g.40gb", Replicas: 1},
	}}
	return v1alpha1.GPUNodeStatus{
		Backend:     "sim:dgx-h100",
		Versions:    v1alpha1.Versions{Driver: "550.54.15", CUDADriver: "12.4", NVML: "12.550.54.15"},
		MIGStrategy: "mixed",
		GPUs:        []v1alpha1.GPU{healthyGPU(0, "NVIDIA-H100-80GB-HBM3"), mig},
		Links:       []string{"X NVS18:NODE", "NVS18:NODE X"},
		Allocations: []v1alpha1.Allocation{{
			Namespace: "default", Pod: "train-0", Container: "main",
			Resource: "nvidia.com/gpu", DeviceIDs: []string{"GPU-a"},
		}},
		Layout: v1alpha1.Layout{Config: "all-balanced", State: "success",
			LastChangeTime: &metav1.Time{Time: heartbeat.Add(-time.Minute)}},
		Summary: v1alpha1.Summary{GPUs: 2, Product: "NVIDIA-H100-80GB-HBM3", Devices: 2,
			AllocatedDevices: 1, Allocation: "1/2", UnhealthyGPUs: 1},
		HeartbeatTime: metav1.Time{Time: heartbeat},
	}
}

func poll(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func testApplyGetListWatch(t *testing.T, r *rig) {
	ctx := t.Context()

	// An informer started before the object exists sees it arrive.
	inf := cache.NewSharedIndexInformer(r.client.ListWatch(), &v1alpha1.GPUNode{}, 0, cache.Indexers{})
	infCtx, stop := context.WithCancel(ctx)
	defer stop()
	go inf.RunWithContext(infCtx)
	w, err := r.client.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + r.node.Name})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Stop()

	obj := ownedBy(r.node)
	created, err := r.client.Apply(ctx, obj, client.ApplyOptions{FieldManager: manager})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if diff := cmp.Diff(obj.OwnerReferences, created.OwnerReferences); diff != "" {
		t.Errorf("owner references (-want +got):\n%s", diff)
	}
	heartbeat := time.Now().Truncate(time.Second).UTC()
	obj.Status = sampleStatus(heartbeat)
	applied, err := r.client.ApplyStatus(ctx, obj, client.ApplyOptions{FieldManager: manager})
	if err != nil {
		t.Fatalf("ApplyStatus: %v", err)
	}
	got, err := r.client.Get(ctx, r.node.Name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(obj.Status, got.Status); diff != "" {
		t.Errorf("status after a round trip (-want +got):\n%s", diff)
	}
	if got.ResourceVersion != applied.ResourceVersion {
		t.Errorf("Get resourceVersion %s, ApplyStatus returned %s", got.ResourceVersion, applied.ResourceVersion)
	}
	for _, mf := range got.ManagedFields {
		if mf.Manager != manager {
			t.Errorf("managed fields name manager %q, want only %q", mf.Manager, manager)
		}
	}

	l, err := r.client.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(l.Items) != 1 || l.Items[0].Name != r.node.Name {
		t.Errorf("List = %d items, want the one GPUNode %s", len(l.Items), r.node.Name)
	}

	var events []watch.EventType
	deadline := time.After(30 * time.Second)
	for len(events) < 2 {
		select {
		case e := <-w.ResultChan():
			if _, ok := e.Object.(*v1alpha1.GPUNode); !ok {
				t.Fatalf("watch event %s carries %T", e.Type, e.Object)
			}
			events = append(events, e.Type)
		case <-deadline:
			t.Fatalf("watch saw %v, want ADDED then MODIFIED", events)
		}
	}
	if events[0] != watch.Added || events[1] != watch.Modified {
		t.Errorf("watch saw %v, want [ADDED MODIFIED]", events)
	}
	poll(t, "the informer to see the status", func(context.Context) (bool, error) {
		o, ok, _ := inf.GetStore().GetByKey(r.node.Name)
		return ok && o.(*v1alpha1.GPUNode).Status.Summary.Allocation == "1/2", nil
	})

	// The one-node list-watch the agent uses sees only its node.
	for name, want := range map[string]int{r.node.Name: 1, "absent": 0} {
		one, err := r.client.NodeListWatch(name).ListWithContext(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("NodeListWatch(%s) list: %v", name, err)
		}
		if n := len(one.(*v1alpha1.GPUNodeList).Items); n != want {
			t.Errorf("NodeListWatch(%s) listed %d GPUNodes, want %d", name, n, want)
		}
	}

	if err := r.client.Delete(ctx, r.node.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := r.client.Get(ctx, r.node.Name); !apierrors.IsNotFound(err) {
		t.Errorf("Get after Delete: %v, want NotFound", err)
	}
}

func testApplyStatusNeedsTheObject(t *testing.T, r *rig) {
	obj := ownedBy(r.node)
	obj.Status = sampleStatus(time.Now())
	_, err := r.client.ApplyStatus(t.Context(), obj, client.ApplyOptions{FieldManager: manager})
	if !apierrors.IsNotFound(err) {
		t.Errorf("ApplyStatus before Apply: %v, want NotFound", err)
	}
}

func testSchemaRejectsBadStatus(t *testing.T, r *rig) {
	ctx := t.Context()
	if _, err := r.client.Apply(ctx, ownedBy(r.node), client.ApplyOptions{FieldManager: manager}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*v1alpha1.GPUNodeStatus)
		field  string
	}{
		{name: "unknown health", mutate: func(s *v1alpha1.GPUNodeStatus) { s.GPUs[0].Health = "Broken" }, field: "health"},
		{name: "zero replicas", mutate: func(s *v1alpha1.GPUNodeStatus) { s.GPUs[0].Sharing.Replicas = 0 }, field: "replicas"},
		{name: "unknown mig strategy", mutate: func(s *v1alpha1.GPUNodeStatus) { s.MIGStrategy = "some" }, field: "migStrategy"},
		{name: "negative placement", mutate: func(s *v1alpha1.GPUNodeStatus) { s.GPUs[1].MIGSlices[0].Placement.Start = -1 }, field: "start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := ownedBy(r.node)
			obj.Status = sampleStatus(time.Now())
			tt.mutate(&obj.Status)
			_, err := r.client.ApplyStatus(ctx, obj, client.ApplyOptions{FieldManager: manager})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("ApplyStatus: %v, want Invalid naming %s", err, tt.field)
			}
		})
	}
}

func TestApplyOptionsChecked(t *testing.T) {
	c, err := client.NewForConfig(k8stestlessConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		obj  *v1alpha1.GPUNode
		opts client.ApplyOptions
		want string
	}{
		{name: "no name", obj: &v1alpha1.GPUNode{}, opts: client.ApplyOptions{FieldManager: manager}, want: "no name"},
		{name: "no manager", obj: &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: "n"}}, want: "no field manager"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ApplyStatus(t.Context(), tt.obj, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ApplyStatus: %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if _, err := client.NewForConfig(nil); err == nil {
		t.Error("NewForConfig(nil) succeeded")
	}
}

// testTable checks what `kubectl get gpunodes` prints: the API server's
// Table for the CRD's printer columns.
func testTable(t *testing.T, r *rig) {
	ctx := t.Context()
	obj := ownedBy(r.node)
	if _, err := r.client.Apply(ctx, obj, client.ApplyOptions{FieldManager: manager}); err != nil {
		t.Fatal(err)
	}
	obj.Status = sampleStatus(time.Now())
	if _, err := r.client.ApplyStatus(ctx, obj, client.ApplyOptions{FieldManager: manager}); err != nil {
		t.Fatal(err)
	}
	raw, err := r.client.RESTClient().Get().Resource(v1alpha1.Resource).Name(r.node.Name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		Param("includeObject", "None").DoRaw(ctx)
	if err != nil {
		t.Fatalf("getting table: %v: %s", err, raw)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatalf("decoding table: %v", err)
	}
	var names []string
	var wide []string
	for _, c := range table.ColumnDefinitions {
		if c.Priority == 0 {
			names = append(names, c.Name)
		} else {
			wide = append(wide, c.Name)
		}
	}
	if diff := cmp.Diff([]string{"Name", "GPUs", "Product", "Layout", "Allocated", "Unhealthy", "Age"}, names); diff != "" {
		t.Errorf("default columns (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Config", "Driver", "Heartbeat"}, wide); diff != "" {
		t.Errorf("-o wide columns (-want +got):\n%s", diff)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("table has %d rows, want 1", len(table.Rows))
	}
	cells := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		cells[c.Name] = table.Rows[0].Cells[i]
	}
	want := map[string]any{
		"Name": r.node.Name, "GPUs": float64(2), "Product": "NVIDIA-H100-80GB-HBM3", "Layout": "success",
		"Allocated": "1/2", "Unhealthy": float64(1), "Config": "all-balanced", "Driver": "550.54.15",
	}
	for k, v := range want {
		if cells[k] != v {
			t.Errorf("column %s = %v (%T), want %v", k, cells[k], cells[k], v)
		}
	}
	t.Logf("kubectl get gpunodes -o wide:\n%s", formatTable(table))
}

// formatTable renders a Table as kubectl's plain printer does (roughly).
func formatTable(t metav1.Table) string {
	var b strings.Builder
	for _, c := range t.ColumnDefinitions {
		b.WriteString(strings.ToUpper(c.Name) + "\t")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		for _, c := range r.Cells {
			b.WriteString(strings.TrimSpace(strings.ReplaceAll(jsonString(c), "\"", "")) + "\t")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// k8stestlessConfig points at no server: for checks that fail before a request.
func k8stestlessConfig() *rest.Config { return &rest.Config{Host: "https://127.0.0.1:1"} }
