package scheduler

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedv1alpha2 "k8s.io/api/scheduling/v1alpha2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

// gpuNodeAPI installs the GPUNode CRD on cp and returns the context of the
// test's clients, its cancel (call it before the control plane stops, or the
// teardown waits a minute for the watches) and a GPUNode client.
func gpuNodeAPI(t *testing.T, cp *k8stest.ControlPlane) (context.Context, context.CancelFunc, *client.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	if err := inventorytest.InstallCRD(ctx, cp.RESTConfig()); err != nil {
		cancel()
		t.Fatal(err)
	}
	gc, err := client.NewForConfig(cp.RESTConfig())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return ctx, cancel, gc
}

func setLimits(pod *corev1.Pod) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.Image = "registry.example/ml:1"
		c.Resources.Limits = corev1.ResourceList{}
		for n, q := range c.Resources.Requests {
			if n != corev1.ResourceCPU && n != corev1.ResourceMemory {
				c.Resources.Limits[n] = q
			}
		}
	}
}

// publishNode creates the Node for a GPUNode (when kc is not nil) and
// applies the GPUNode as the agent does.
func publishNode(ctx context.Context, t *testing.T, kc kubernetes.Interface, gc *client.Client, gn *v1alpha1.GPUNode) {
	t.Helper()
	if kc != nil {
		node, err := kc.CoreV1().Nodes().Create(ctx, kubeNode(gn, "224", "2Ti"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating node: %v", err)
		}
		gn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
	}
	opts := client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true}
	if _, err := gc.Apply(ctx, gn, opts); err != nil {
		t.Fatalf("applying gpunode: %v", err)
	}
	if _, err := gc.ApplyStatus(ctx, gn, opts); err != nil {
		t.Fatalf("applying gpunode status: %v", err)
	}
}

func createPodGroup(ctx context.Context, t *testing.T, kc kubernetes.Interface, name string, minCount int32) {
	t.Helper()
	pg := &schedv1alpha2.PodGroup{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: schedv1alpha2.PodGroupSpec{SchedulingPolicy: schedv1alpha2.PodGroupSchedulingPolicy{
			Gang: &schedv1alpha2.GangSchedulingPolicy{MinCount: minCount},
		}},
	}
	if _, err := kc.SchedulingV1alpha2().PodGroups("default").Create(ctx, pg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod group %s: %v", name, err)
	}
}

// createGPUPod creates a pod for Tessera's scheduler, in the pod group
// group when it is not empty.
func createGPUPod(ctx context.Context, t *testing.T, kc kubernetes.Interface, b *podBuilder, group string) *corev1.Pod {
	t.Helper()
	pod := b.obj()
	pod.UID = ""
	pod.Spec.SchedulerName = testSchedulerName
	if group != "" {
		pod.Spec.SchedulingGroup = &corev1.PodSchedulingGroup{PodGroupName: ptr.To(group)}
	}
	setLimits(pod)
	got, err := kc.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
	if group != "" && got.Spec.SchedulingGroup == nil {
		t.Fatalf("pod %s lost its scheduling group: is the GenericWorkload gate on in the apiserver?", pod.Name)
	}
	return got
}

func waitBound(ctx context.Context, t *testing.T, kc kubernetes.Interface, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := kc.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		return p.Spec.NodeName != "" && p.Annotations[AnnotationDevices] != "", nil
	})
	if err != nil {
		t.Fatalf("pod %s not bound with devices: %v (conditions %+v)", pod.Name, err, got.Status.Conditions)
	}
	return got
}

// waitUnschedulable waits for the pod's PodScheduled=False condition and
// returns its message.
func waitUnschedulable(ctx context.Context, t *testing.T, kc kubernetes.Interface, pod *corev1.Pod) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := kc.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				msg = c.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod %s never refused: %v", pod.Name, err)
	}
	return msg
}

func waitPodsGone(ctx context.Context, t *testing.T, kc kubernetes.Interface, names ...string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if _, err := kc.CoreV1().Pods("default").Get(ctx, n, metav1.GetOptions{}); err == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods %v not gone: %v", names, err)
	}
}
