package kube_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
)

// start starts a control plane and returns it with the full clientset, for
// fixtures only.
func start(t *testing.T) (*k8stest.ControlPlane, kubernetes.Interface) {
	t.Helper()
	cp := k8stest.StartForTest(t)
	return cp, cp.Client()
}

func newClient(t *testing.T, cp *k8stest.ControlPlane) *kube.Client {
	t.Helper()
	c, err := kube.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createNode(ctx context.Context, t *testing.T, fixtures kubernetes.Interface, name string) {
	t.Helper()
	if _, err := fixtures.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func poll(ctx context.Context, t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestKubeClient(t *testing.T) {
	cp, fixtures := start(t)
	ctx := context.Background()

	t.Run("nodes", func(t *testing.T) {
		c := newClient(t, cp)
		createNode(ctx, t, fixtures, "node-a")
		createNode(ctx, t, fixtures, "node-b")
		if _, err := c.GetNode(ctx, "missing"); !apierrors.IsNotFound(err) {
			t.Errorf("GetNode(missing) error = %v, want NotFound", err)
		}
		l, err := c.ListNodes(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "node-b").String()})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) != 1 || l.Items[0].Name != "node-b" {
			t.Errorf("ListNodes(metadata.name=node-b) = %d items, want node-b alone", len(l.Items))
		}

		patched, err := c.PatchNode(ctx, "node-a", types.MergePatchType, []byte(`{"metadata":{"labels":{"example.com/a":"1"}}}`),
			metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.GetNode(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["example.com/a"] != "1" || got.ResourceVersion != patched.ResourceVersion {
			t.Errorf("after PatchNode: labels %v, resourceVersion %s; want example.com/a=1 at the patch's resourceVersion %s",
				got.Labels, got.ResourceVersion, patched.ResourceVersion)
		}
		// A patch removing the label (JSON null).
		if _, err := c.PatchNode(ctx, "node-a", types.MergePatchType, []byte(`{"metadata":{"labels":{"example.com/a":null}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, err := c.GetNode(ctx, "node-a"); err != nil || got.Labels["example.com/a"] != "" {
			t.Errorf("after removing the label: %v, %v", got.Labels, err)
		}

		w, err := c.WatchNodes(ctx, metav1.ListOptions{FieldSelector: "metadata.name=node-b", ResourceVersion: l.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if _, err := fixtures.CoreV1().Nodes().Patch(ctx, "node-b", types.MergePatchType, []byte(`{"metadata":{"labels":{"example.com/b":"2"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-w.ResultChan():
			if n, ok := ev.Object.(*v1.Node); !ok || n.Name != "node-b" || n.Labels["example.com/b"] != "2" {
				t.Errorf("watch event %s %T, want node-b modified with example.com/b=2", ev.Type, ev.Object)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no watch event for node-b")
		}
	})

	t.Run("informer on one node", func(t *testing.T) {
		c := newClient(t, cp)
		createNode(ctx, t, fixtures, "informed")
		createNode(ctx, t, fixtures, "other")
		inf := cache.NewSharedIndexInformer(c.NodeListWatch("informed"), &v1.Node{}, 0, cache.Indexers{})
		ictx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			inf.RunWithContext(ictx)
		}()
		defer func() {
			cancel()
			<-done
		}()
		if !cache.WaitForCacheSync(ictx.Done(), inf.HasSynced) {
			t.Fatal("informer cache never synced")
		}
		if keys := inf.GetStore().ListKeys(); len(keys) != 1 || keys[0] != "informed" {
			t.Errorf("informer store = %v, want [informed]", keys)
		}
		if _, err := c.PatchNode(ctx, "informed", types.MergePatchType, []byte(`{"metadata":{"labels":{"example.com/x":"y"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(ctx, t, "the informer to see the label", func(context.Context) (bool, error) {
			obj, ok, err := inf.GetStore().GetByKey("informed")
			if err != nil || !ok {
				return false, err
			}
			n, isNode := obj.(*v1.Node)
			return isNode && n.Labels["example.com/x"] == "y", nil
		})
	})

	t.Run("evictions", func(t *testing.T) {
		// Count eviction requests: a refused one must not be retried by
		// client-go (the apiserver sends Retry-After: 10 with its 429).
		var evictions atomic.Int32
		cfg := cp.RESTConfig()
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if strings.HasSuffix(r.URL.Path, "/eviction") {
					evictions.Add(1)
				}
				return rt.RoundTrip(r)
			})
		}
		c, err := kube.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		runningPod(ctx, t, fixtures, "protected", map[string]string{"app": "protected"})
		runningPod(ctx, t, fixtures, "free", nil)
		one := intstr.FromInt32(1)
		if _, err := fixtures.PolicyV1().PodDisruptionBudgets("default").Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "protected", Namespace: "default"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &one,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "protected"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}

		tests := []struct {
			name    string
			pod     string
			wantErr func(error) bool
		}{
			{name: "a budget refuses", pod: "protected", wantErr: apierrors.IsTooManyRequests},
			{name: "no budget", pod: "free"},
			{name: "no pod", pod: "missing", wantErr: apierrors.IsNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := evictions.Load()
				err := c.EvictPod(ctx, "default", tt.pod)
				switch {
				case tt.wantErr == nil && err != nil:
					t.Fatalf("EvictPod(%s): %v", tt.pod, err)
				case tt.wantErr != nil && !tt.wantErr(err):
					t.Fatalf("EvictPod(%s) error = %v, of the wrong kind", tt.pod, err)
				}
				if n := evictions.Load() - before; n != 1 {
					t.Errorf("EvictPod(%s) made %d eviction requests, want 1", tt.pod, n)
				}
			})
		}
		switch p, err := fixtures.CoreV1().Pods("default").Get(ctx, "free", metav1.GetOptions{}); {
		case apierrors.IsNotFound(err):
		case err != nil:
			t.Fatal(err)
		case p.DeletionTimestamp == nil:
			t.Error("the evicted pod is not being deleted")
		}
		if p, err := fixtures.CoreV1().Pods("default").Get(ctx, "protected", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
			t.Errorf("the protected pod was evicted: %v", err)
		}
	})

	t.Run("events", func(t *testing.T) {
		c := newClient(t, cp)
		createNode(ctx, t, fixtures, "evented")
		node, err := c.GetNode(ctx, "evented")
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		recorder, stop := kube.NewEventRecorder(rctx, c, "kube-test", "evented")
		defer stop()
		// The second identical event is a patch of the first's count.
		recorder.Event(node, v1.EventTypeWarning, "Tested", "twice")
		poll(ctx, t, "the first event", func(ctx context.Context) (bool, error) {
			return countOf(ctx, fixtures, "evented", "Tested") == 1, nil
		})
		recorder.Event(node, v1.EventTypeWarning, "Tested", "twice")
		poll(ctx, t, "the event's count to become 2", func(ctx context.Context) (bool, error) {
			return countOf(ctx, fixtures, "evented", "Tested") == 2, nil
		})
		evs, err := fixtures.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason != "Tested" {
				continue
			}
			if e.InvolvedObject.Kind != "Node" || e.InvolvedObject.APIVersion != "v1" || e.Source.Component != "kube-test" || e.Source.Host != "evented" {
				t.Errorf("event refers to %s %s from %+v, want Node v1 from kube-test on evented", e.InvolvedObject.APIVersion, e.InvolvedObject.Kind, e.Source)
			}
		}
	})
}

func TestNewForConfigNil(t *testing.T) {
	if _, err := kube.NewForConfig(nil); err == nil {
		t.Error("NewForConfig(nil) succeeded")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// runningPod creates a running, ready pod (bound to no node).
func runningPod(ctx context.Context, t *testing.T, fixtures kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	p, err := fixtures.CoreV1().Pods("default").Create(ctx, &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "main", Image: "cuda"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = v1.PodStatus{Phase: v1.PodRunning, Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}}}
	if _, err := fixtures.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// countOf returns the count of the event with reason on a node (0 if none).
func countOf(ctx context.Context, fixtures kubernetes.Interface, node, reason string) int32 {
	evs, err := fixtures.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == node && e.Reason == reason {
			return e.Count
		}
	}
	return 0
}
