package procmap

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

// TestPodIndexFollowsTheNodesPods runs the index against a real
// kube-apiserver: pods of the node appear with their container IDs, pods of
// other nodes do not, deleted pods go.
func TestPodIndexFollowsTheNodesPods(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := t.Context()
	cs := cp.Client()
	lw := cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "pods", metav1.NamespaceAll,
		fields.OneTermEqualSelector("spec.nodeName", "gpu-1"))
	x := NewPodIndex(lw)
	done := make(chan error, 1)
	runCtx, cancel := contextWithCancel(t)
	go func() { done <- x.Run(runCtx) }()
	defer func() { cancel(); <-done }() //nolint:errcheck // a cancelled index returns its context error

	mk := func(name, node string) *v1.Pod {
		p := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "cuda", Image: "x"}}},
		}
		p, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.ContainerStatuses = []v1.ContainerStatus{{Name: "cuda", ContainerID: "containerd://" + testContainer}}
		p, err = cs.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	mine := mk("mine", "gpu-1")
	other := mk("other", "gpu-2")

	waitFor(t, func() bool {
		p, ok := x.Pod(string(mine.UID))
		return ok && p.Containers[testContainer] == "cuda"
	})
	if !x.HasSynced() {
		t.Error("HasSynced is false after the first pod arrived")
	}
	p, _ := x.Pod(string(mine.UID))
	if p.Namespace != "default" || p.Name != "mine" {
		t.Errorf("Pod = %+v", p)
	}
	if _, ok := x.Pod(string(other.UID)); ok {
		t.Error("a pod of another node is in the index")
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "mine", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := x.Pod(string(mine.UID)); return !ok })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
