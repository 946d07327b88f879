package agent_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/kubelettest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

// TestKubeletGetsThePlannedDevicesOutOfOrder: two pods bound to a DGX with
// the scheduler's plans (gpu.tessera.dev/devices), the kubelet's own device
// manager admitting them in the reverse of the planned order. The agent's
// preferred allocation reads the plans from a real kube-apiserver and what
// the kubelet lists from the kubelet's PodResources server, and each pod
// gets its planned GPUs; by the free set alone the first admitted would
// take the other's.
func TestKubeletGetsThePlannedDevicesOutOfOrder(t *testing.T) {
	kubelet := kubelettest.Start(t)
	cp := k8stest.StartForTest(t)
	ctx := klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(2))))
	const nodeName = "dgx-0"
	if _, err := cp.Client().CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pr := podresourcestest.StartFrom(t, kubelet.ActivePods, kubelet.Manager())
	kc, err := kube.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	cfg := standaloneConfig(t, openSim(t, "dgx-h100"))
	cfg.Client, cfg.NodeName, cfg.Registry = kc, nodeName, reg
	cfg.PluginDir, cfg.PodResourcesSocket = kubelettest.PluginDir, pr.Socket()
	// The periodic PodResources refresh plays no part: the preferred
	// allocation refreshes it itself.
	cfg.PodResourcesInterval = time.Hour
	a := start(ctx, t, cfg)
	poll(t, "the kubelet to serve 8 GPUs", func() bool {
		_, alloc, _ := kubelet.Manager().GetCapacity()
		q := alloc["nvidia.com/gpu"]
		return q.Value() == 8
	})
	uuids := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, a.Machine().Devices[i].UUID)
		}
		return out
	}
	// The scheduler planned "first" on GPUs 0-3 and "second" on 4-7; the
	// kubelet admits "second" first, and the allocator alone would give it
	// 0-3 (the first NUMA half of a free DGX).
	bind := func(name string, plan []string) *v1.Pod {
		r := v1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(4, resource.DecimalSI)}
		p, err := cp.Client().CoreV1().Pods("ml").Create(ctx, &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", Annotations: map[string]string{v1alpha1.AnnotationDevices: strings.Join(plan, ",")}},
			Spec: v1.PodSpec{NodeName: nodeName, Containers: []v1.Container{{Name: "main", Image: "cuda",
				Resources: v1.ResourceRequirements{Limits: r, Requests: r}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := cp.Client().CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first := bind("first", uuids(0, 1, 2, 3))
	second := bind("second", uuids(4, 5, 6, 7))
	got := func(p *v1.Pod) []string {
		return slices.Sorted(maps.Keys(kubelet.Manager().GetDevices(string(p.UID), "main")["nvidia.com/gpu"]))
	}
	for _, p := range []*v1.Pod{second, first} {
		if err := kubelet.Admit(p); err != nil {
			t.Fatal(err)
		}
	}
	if g, want := got(second), uuids(4, 5, 6, 7); !slices.Equal(g, sorted(want)) {
		t.Errorf("second (admitted first) got %v, want its plan %v", g, want)
	}
	if g, want := got(first), uuids(0, 1, 2, 3); !slices.Equal(g, sorted(want)) {
		t.Errorf("first (admitted second) got %v, want its plan %v", g, want)
	}
	const want = `
# HELP tessera_device_plugin_preferred_allocations_total Preferred allocations answered to the kubelet, by source: plan (the devices gpu-scheduler planned for the pod being admitted) or own (the allocator's choice).
# TYPE tessera_device_plugin_preferred_allocations_total counter
tessera_device_plugin_preferred_allocations_total{source="own"} 0
tessera_device_plugin_preferred_allocations_total{source="plan"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tessera_device_plugin_preferred_allocations_total"); err != nil {
		t.Error(err)
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }
