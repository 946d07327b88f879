package plans_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/plans"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

const node = "gpu-0"

// gpuPod is a pod bound to node asking for n GPUs in one container, with
// the plan devices when they are given.
func gpuPod(name string, n int64, devices string) *v1.Pod {
	r := v1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(n, resource.DecimalSI)}
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml"},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "main", Image: "cuda",
			Resources: v1.ResourceRequirements{Limits: r, Requests: r}}}},
	}
	if devices != "" {
		p.Annotations = map[string]string{v1alpha1.AnnotationDevices: devices}
	}
	return p
}

func create(ctx context.Context, t testing.TB, kc kubernetes.Interface, pods ...*v1.Pod) {
	t.Helper()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if _, err := kc.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// source is a plan source for node over a real kube-apiserver and the
// kubelet's PodResources server.
func source(t testing.TB, cp *k8stest.ControlPlane, kubelet *podresourcestest.Server) *plans.Source {
	t.Helper()
	kc, err := kube.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return plans.New(node, kc, podresources.New(podresources.Options{Socket: kubelet.Socket()}))
}

// TestPendingPlans: which of a node's pods are pending plans, with what they
// want and hold and whether the kubelet lists them.
func TestPendingPlans(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := t.Context()
	ended := gpuPod("ended", 1, "GPU-e")
	deleting := gpuPod("deleting", 1, "GPU-d")
	deleting.Finalizers = []string{"tessera.test/keep"}
	create(ctx, t, cp.Client(),
		gpuPod("waiting", 4, "GPU-1,GPU-0, GPU-3,GPU-2"), // not listed by the kubelet yet
		gpuPod("admitting", 2, "GPU-4,GPU-5"),            // listed, no device yet
		gpuPod("half", 2, "GPU-6,GPU-7"),                 // one of two held
		gpuPod("running", 1, "GPU-8"),                    // holds what it wants
		gpuPod("unplanned", 1, ""),                       // placed by another scheduler
		ended, deleting,
		func() *v1.Pod { p := gpuPod("elsewhere", 1, "GPU-9"); p.Spec.NodeName = "gpu-1"; return p }(),
	)
	if _, err := cp.Client().CoreV1().Pods("ml").UpdateStatus(ctx, func() *v1.Pod {
		p, err := cp.Client().CoreV1().Pods("ml").Get(ctx, "ended", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = v1.PodSucceeded
		return p
	}(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cp.Client().CoreV1().Pods("ml").Delete(ctx, "deleting", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cp.Client().CoreV1().Pods("ml").Patch(context.WithoutCancel(ctx), "deleting", "application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	})
	kubelet := podresourcestest.Start(t,
		podresourcestest.Pod{Namespace: "ml", Name: "admitting", Containers: []podresourcestest.Container{{Name: "main"}}},
		podresourcestest.Pod{Namespace: "ml", Name: "half", Containers: []podresourcestest.Container{{Name: "main", Devices: []podresourcestest.Device{{Resource: "nvidia.com/gpu", IDs: []string{"GPU-6"}}}}}},
		podresourcestest.Pod{Namespace: "ml", Name: "running", Containers: []podresourcestest.Container{{Name: "main", Devices: []podresourcestest.Device{{Resource: "nvidia.com/gpu", IDs: []string{"GPU-8"}}}}}},
	)
	got, err := source(t, cp, kubelet).PendingPlans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		pod        string
		devices    string
		want, held int64
		admitting  bool
	}
	var sums []summary
	for _, p := range got {
		sums = append(sums, summary{p.Pod, fmt.Sprint(p.Devices), p.Want["nvidia.com/gpu"], p.Held["nvidia.com/gpu"], p.Admitting})
		if p.Created.IsZero() {
			t.Errorf("%s: no creation time", p.Pod)
		}
	}
	slices.SortFunc(sums, func(a, b summary) int {
		if a.pod < b.pod {
			return -1
		}
		return 1
	})
	want := []summary{
		{"ml/admitting", "[GPU-4 GPU-5]", 2, 0, true},
		{"ml/half", "[GPU-6 GPU-7]", 2, 1, true},
		{"ml/waiting", "[GPU-0 GPU-1 GPU-2 GPU-3]", 4, 0, false},
	}
	if !slices.Equal(sums, want) {
		t.Errorf("pending plans:\n got  %+v\n want %+v", sums, want)
	}

	// A kubelet that does not answer: no plan can be trusted.
	kubelet.Stop()
	if _, err := source(t, cp, kubelet).PendingPlans(ctx); err == nil {
		t.Error("PendingPlans with the kubelet gone: no error")
	}
}

// BenchmarkPendingPlans is one look-up on a full node (110 pods, every one
// planned and listed by the kubelet): what each preferred allocation costs
// the agent. Nothing is kept between calls.
func BenchmarkPendingPlans(b *testing.B) {
	cp := k8stest.StartForTest(b)
	ctx := b.Context()
	var pods []*v1.Pod
	var listed []podresourcestest.Pod
	for i := range 110 {
		name := fmt.Sprintf("p-%03d", i)
		pods = append(pods, gpuPod(name, 1, fmt.Sprintf("GPU-%d", i)))
		listed = append(listed, podresourcestest.Pod{Namespace: "ml", Name: name, Containers: []podresourcestest.Container{{Name: "main"}}})
	}
	create(ctx, b, cp.Client(), pods...)
	src := source(b, cp, podresourcestest.Start(b, listed...))
	var got []deviceplugin.Plan
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if got, err = src.PendingPlans(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if len(got) != 110 {
		b.Fatalf("%d pending plans, want 110", len(got))
	}
}
