package scheduler

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/configz"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/features"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

const testSchedulerName = "tessera-gpu-scheduler"

// Binders say who binds the pods Tessera planned: tesseraBinds is the
// shipped profile (TesseraGPU enabled at bind, the plan in the Binding),
// defaultBinds a profile that enables TesseraGPU at multiPoint only (the
// plan patched by PreBind, DefaultBinder binds).
const (
	tesseraBinds = true
	defaultBinds = false
)

// schedulerConfig is a KubeSchedulerConfiguration with Tessera's profile as a
// second scheduler; args is the plugin's args (YAML, indented by 6).
func schedulerConfig(kubeconfig, args string, binds bool) string {
	bind := ""
	if binds {
		bind = "    bind:\n      enabled:\n      - name: TesseraGPU\n"
	}
	return fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
clientConnection:
  kubeconfig: %s
  qps: 500
  burst: 1000
profiles:
- schedulerName: %s
  plugins:
    multiPoint:
      enabled:
      - name: TesseraGPU
        weight: 10
%s  pluginConfig:
  - name: TesseraGPU
    args:
%s
`, kubeconfig, testSchedulerName, bind, args)
}

// startScheduler runs the scheduler with Tessera's profile (args as in
// schedulerConfig) until the test ends, when the cleanup stops it and waits
// for it. A scheduler that stops by itself fails the test and cancels its
// context (cancel), so that the test's waits for bindings end at once.
func startScheduler(ctx context.Context, t *testing.T, cancel context.CancelFunc, kubeconfig, args string, binds bool) {
	t.Helper()
	path := writeConfig(t, schedulerConfig(kubeconfig, args, binds))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := runScheduler(runCtx, path)
		if runCtx.Err() == nil {
			t.Errorf("the scheduler stopped by itself: %v", err)
			cancel()
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// writeConfig writes a scheduler configuration into the test's directory
// and returns its path.
func writeConfig(t *testing.T, config string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runScheduler runs kube-scheduler with the configuration file until ctx
// ends: the scheduler's own Setup and Run, as its command calls them (the
// command itself installs a process-wide signal handler, once).
func runScheduler(ctx context.Context, config string) error {
	opts := options.NewOptions()
	opts.ConfigFile = config
	opts.SecureServing.BindPort = 0
	cc, sched, err := app.Setup(ctx, opts, app.WithPlugin(Name, New))
	if err != nil {
		return err
	}
	// Run registers the configuration under /configz, which is process-
	// wide and refuses a second registration: without this a second
	// scheduler in the process (go test -count=2) stopped at once, and the
	// test waited for bindings that never came. kube-scheduler's own test
	// server deletes it the same way.
	defer configz.Delete("componentconfig")
	return app.Run(ctx, cc, sched)
}

// TestSchedulerPlacesMLOpsPods runs the real kube-scheduler (in-process, with
// Tessera registered as a second scheduler) against a real kube-apiserver
// with GPUNodes for several simulated machines, and checks where the pods
// an MLOps stack creates land and which devices Tessera planned for them.
func TestSchedulerPlacesMLOpsPods(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx, cancel, gc := gpuNodeAPI(t, cp)
	defer cancel()
	kc := cp.Client()

	t.Run("InvalidArgsStopTheScheduler", func(t *testing.T) {
		err := runScheduler(ctx, writeConfig(t, schedulerConfig(cp.Kubeconfig, "      staleAfter: 1s\n      placement:\n        sharePolicy: random", tesseraBinds)))
		if err == nil {
			t.Fatal("the scheduler started with invalid args")
		}
		for _, want := range []string{"staleAfter: Invalid value: \"1s\": must be at least 10s", `placement.sharePolicy: Unsupported value: "random": supported values: "packed", "distributed"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q:\n%v", want, err)
			}
		}
	})

	now := time.Now()
	machines := []*v1alpha1.GPUNode{
		dgxH100("dgx-1", now).obj(), dgxH100("dgx-2", now).obj(), dgxH100("dgx-3", now).obj(), dgxH100("dgx-4", now).obj(),
		dgxH100("dgx-mig", now, 6, 7).obj(),
		l40sServer("l40s-1", now).obj(),
		sharedNode("ts-1", now, 2, 4).obj(),
	}
	for _, gn := range machines {
		node, err := kc.CoreV1().Nodes().Create(ctx, kubeNode(gn, "224", "2Ti"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating node: %v", err)
		}
		gn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		if _, err := gc.Apply(ctx, gn, client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true}); err != nil {
			t.Fatalf("applying gpunode: %v", err)
		}
		if _, err := gc.ApplyStatus(ctx, gn, client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true}); err != nil {
			t.Fatalf("applying gpunode status: %v", err)
		}
	}

	startScheduler(ctx, t, cancel, cp.Kubeconfig, "      staleAfter: 10m", tesseraBinds)

	create := func(t *testing.T, b *podBuilder) *corev1.Pod {
		t.Helper()
		pod := b.obj()
		pod.UID = ""
		pod.Spec.SchedulerName = testSchedulerName
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			c.Image = "registry.example/ml:1"
			// Extended resources need limits equal to the requests.
			c.Resources.Limits = corev1.ResourceList{}
			for n, q := range c.Resources.Requests {
				if strings.HasPrefix(string(n), "nvidia.com/") {
					c.Resources.Limits[n] = q
				}
			}
		}
		got, err := kc.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating pod %s: %v", pod.Name, err)
		}
		return got
	}
	bound := func(t *testing.T, pod *corev1.Pod) *corev1.Pod {
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

	t.Run("PyTorchJob master and 3 workers of 8 GPUs take whole DGX nodes", func(t *testing.T) {
		var pods []*corev1.Pod
		for _, n := range []string{"job-master-0", "job-worker-0", "job-worker-1", "job-worker-2"} {
			pods = append(pods, create(t, newPod(n).container("pytorch", "nvidia.com/gpu=8", "cpu=32", "memory=256Gi")))
		}
		var nodes []string
		for _, p := range pods {
			p = bound(t, p)
			nodes = append(nodes, p.Spec.NodeName)
			if devs := v1alpha1.ParseDevices(p.Annotations[AnnotationDevices]); len(devs) != 8 {
				t.Errorf("%s planned %v, want 8 GPUs", p.Name, devs)
			}
		}
		slices.Sort(nodes)
		if want := []string{"dgx-1", "dgx-2", "dgx-3", "dgx-4"}; !slices.Equal(nodes, want) {
			t.Errorf("job landed on %v, want %v", nodes, want)
		}
	})
	t.Run("4-GPU job needing NVLink lands on the MIG-mixed DGX", func(t *testing.T) {
		p := bound(t, create(t, newPod("nvlink-job").container("c", "nvidia.com/gpu=4").annotate(AnnotationInterconnect, "nvlink")))
		devs := v1alpha1.ParseDevices(p.Annotations[AnnotationDevices])
		if p.Spec.NodeName != "dgx-mig" || len(devs) != 4 {
			t.Errorf("on %s with %v, want 4 GPUs on dgx-mig", p.Spec.NodeName, devs)
		}
		// Same NUMA half: the policy keeps the set on one side.
		for _, d := range devs {
			if slices.Contains([]string{"GPU-dgx-mig-6", "GPU-dgx-mig-7"}, d) {
				t.Errorf("planned MIG GPU %s as a whole GPU", d)
			}
		}
	})
	t.Run("KServe predictor on a MIG slice", func(t *testing.T) {
		p := bound(t, create(t, newPod("predictor").container("kserve-container", "nvidia.com/mig-1g.10gb=1", "cpu=2")))
		devs := v1alpha1.ParseDevices(p.Annotations[AnnotationDevices])
		if p.Spec.NodeName != "dgx-mig" || len(devs) != 1 || !strings.HasPrefix(devs[0], "MIG-dgx-mig-") {
			t.Errorf("on %s with %v, want one MIG slice of dgx-mig", p.Spec.NodeName, devs)
		}
	})
	t.Run("notebooks on shares pack one GPU", func(t *testing.T) {
		var gpus []string
		for i := range 3 {
			p := bound(t, create(t, newPod(fmt.Sprintf("notebook-%d", i)).container("jupyter", "nvidia.com/gpu.shared=1", "cpu=1")))
			if p.Spec.NodeName != "ts-1" {
				t.Errorf("%s on %s, want ts-1", p.Name, p.Spec.NodeName)
			}
			gpus = append(gpus, p.Annotations[AnnotationDevices])
		}
		if gpus[0] != gpus[1] || gpus[1] != gpus[2] {
			t.Errorf("notebooks planned on %v, want one GPU (packed)", gpus)
		}
	})
	t.Run("product affinity", func(t *testing.T) {
		p := bound(t, create(t, newPod("l40s-infer").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, l40s)))
		if p.Spec.NodeName != "l40s-1" {
			t.Errorf("on %s, want l40s-1", p.Spec.NodeName)
		}
	})
	t.Run("impossible pods say why in their condition", func(t *testing.T) {
		for _, tc := range []struct {
			b    *podBuilder
			want string
		}{
			{newPod("b200").container("c", "nvidia.com/gpu=1").requireProducts(corev1.NodeSelectorOpIn, "NVIDIA-B200"), "no node has a GPU of product NVIDIA-B200"},
			{newPod("big-share").container("c", "nvidia.com/gpu.shared=6"), "no GPU has 6 units of nvidia.com/gpu.shared; the largest: 4 on node ts-1, GPU 0"},
			{newPod("mixed").container("c", "nvidia.com/gpu=1", "nvidia.com/gpu.shared=1"), "whole GPUs and shares of a GPU cannot be mixed in one container"},
			// Possible, not now: counting filters it (Filter skipped), and
			// PostFilter adds Tessera's words after counting's summary.
			{newPod("no-free-dgx").container("c", "nvidia.com/gpu=8"), "Insufficient nvidia.com/gpu"},
			{newPod("no-free-dgx-2").container("c", "nvidia.com/gpu=8"), "no node has 8 free healthy GPUs (nvidia.com/gpu) of an allowed product; the most: "},
			// PreFilter names the one node with MIG slices; kube-scheduler
			// words the six others by plugin, PostFilter by resource.
			{newPod("mig-no-cpu").container("c", "nvidia.com/mig-1g.10gb=1", "cpu=500"), "6 node(s) didn't satisfy plugin(s) [TesseraGPU]"},
			{newPod("mig-no-cpu-2").container("c", "nvidia.com/mig-1g.10gb=1", "cpu=500"), "6 node(s) advertise no nvidia.com/mig-1g.10gb"},
		} {
			pod := create(t, tc.b)
			var msg string
			err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				p, err := kc.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
						msg = c.Message
						return true, nil
					}
				}
				return false, nil
			})
			if err != nil || !strings.Contains(msg, tc.want) {
				t.Errorf("pod %s: condition %q (%v), want it to contain %q", pod.Name, msg, err, tc.want)
			}
			t.Logf("%s: %s", pod.Name, msg)
			// Pending pods would take what later subtests free.
			if err := kc.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})
	// PreFilter names the few nodes with room (l40s-1 has 3 GPUs free,
	// dgx-mig none once low-batch holds its last two): it must keep dgx-mig,
	// where the pod can preempt low-batch, or preemption never sees it.
	t.Run("a pod preempts a lower-priority GPU holder on a node PreFilter would leave out for room", func(t *testing.T) {
		if _, err := kc.SchedulingV1().PriorityClasses().Create(ctx, &schedulingv1.PriorityClass{
			ObjectMeta: metav1.ObjectMeta{Name: "tessera-test-low"}, Value: -100, Description: "preemptible batch",
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		low := newPod("low-batch").container("c", "nvidia.com/gpu=2").requireProducts(corev1.NodeSelectorOpIn, h100)
		low.p.Spec.PriorityClassName = "tessera-test-low"
		// No kubelet here to finish a graceful deletion.
		low.p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
		// The API server's priority admission reads PriorityClasses from
		// its informer: wait until a dry run of the pod is admitted.
		probe := low.obj()
		probe.UID = ""
		probe.Spec.Containers[0].Image = "registry.example/ml:1"
		probe.Spec.Containers[0].Resources.Limits = probe.Spec.Containers[0].Resources.Requests
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := kc.CoreV1().Pods(probe.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err == nil, nil
		}); err != nil {
			t.Fatalf("the API server does not admit a pod of priority class tessera-test-low: %v", err)
		}
		if p := bound(t, create(t, low)); p.Spec.NodeName != "dgx-mig" {
			t.Fatalf("low-batch on %s, want dgx-mig (the only H100s free)", p.Spec.NodeName)
		}
		p := bound(t, create(t, newPod("urgent").container("c", "nvidia.com/gpu=2").requireProducts(corev1.NodeSelectorOpIn, h100)))
		if p.Spec.NodeName != "dgx-mig" {
			t.Errorf("urgent on %s, want dgx-mig in low-batch's place", p.Spec.NodeName)
		}
		if _, err := kc.CoreV1().Pods("default").Get(ctx, "low-batch", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("low-batch: %v, want it preempted (not found)", err)
		}
	})
}

// TestGangs runs in a child process of the test binary (inChild):
// kube-scheduler's process-wide feature-gate registry keeps the gates the
// first in-process scheduler applied (Setup calls SetFallback once), so a
// scheduler with the gang gates on cannot follow one with them off in the
// same process.
func TestGangs(t *testing.T) {
	if inChild(t, "TestGangs") {
		testGangs(t)
	}
}

// envChild names the test a child process of the test binary runs.
const envChild = "TESSERA_SCHEDULER_TEST_CHILD"

// inChild reports whether this process is the child that runs test; in the
// parent it runs the test binary again for test alone and fails t unless
// the child passes. Tests that start an in-process kube-scheduler with
// settings of their own run so: the scheduler keeps process-wide state
// (the feature-gate registry, its informers' and metrics' globals), and a
// second one in the same process does not schedule.
func inChild(t *testing.T, test string) bool {
	t.Helper()
	if os.Getenv(envChild) == test {
		return true
	}
	if err := k8stest.StartForTest(t).Stop(); err != nil { // skip or fail here as every control-plane test does
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"="+test)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a child process: %v\n%s", test, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("%s child did not pass:\n%s", test, out)
	}
	return false
}

func testGangs(t *testing.T) {
	featuregatetesting.SetFeatureGatesDuringTest(t, utilfeature.DefaultFeatureGate, featuregatetesting.FeatureOverrides{
		features.GenericWorkload: true,
		features.GangScheduling:  true,
	})
	cp := k8stest.StartForTestWith(t, k8stest.Options{APIServerArgs: []string{
		"--feature-gates=GenericWorkload=true,GangScheduling=true",
		"--runtime-config=scheduling.k8s.io/v1alpha2=true",
	}})
	ctx, cancel, gc := gpuNodeAPI(t, cp)
	defer cancel()
	kc := cp.Client()
	now := time.Now()
	for _, gn := range []*v1alpha1.GPUNode{dgxH100("dgx-1", now).obj(), dgxH100("dgx-2", now).obj(), dgxH100("dgx-3", now).obj()} {
		publishNode(ctx, t, kc, gc, gn)
	}
	// The gangs run with DefaultBinder binding: PreBind writes the plans.
	startScheduler(ctx, t, cancel, cp.Kubeconfig, "      staleAfter: 10m", defaultBinds)

	t.Run("a gang that does not fit binds nothing and holds no device", func(t *testing.T) {
		createPodGroup(ctx, t, kc, "big", 4)
		var gang []*corev1.Pod
		for i := range 4 {
			gang = append(gang, createGPUPod(ctx, t, kc, newPod(fmt.Sprintf("big-%d", i)).container("pytorch", "nvidia.com/gpu=8", "cpu=32"), "big"))
		}
		// Every member was tried and refused; none is bound.
		for _, p := range gang {
			msg := waitUnschedulable(ctx, t, kc, p)
			t.Logf("%s: %s", p.Name, msg)
		}
		for _, p := range gang {
			got, err := kc.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.NodeName != "" {
				t.Errorf("gang member %s bound to %s", p.Name, got.Spec.NodeName)
			}
		}
		// The devices planned for the members during the group's cycle are
		// free again in Tessera's model: three whole-node pods fit.
		var nodes []string
		for i := range 3 {
			p := waitBound(ctx, t, kc, createGPUPod(ctx, t, kc, newPod(fmt.Sprintf("solo-%d", i)).container("c", "nvidia.com/gpu=8", "cpu=32"), ""))
			nodes = append(nodes, p.Spec.NodeName)
			if devs := v1alpha1.ParseDevices(p.Annotations[AnnotationDevices]); len(devs) != 8 {
				t.Errorf("%s planned %v, want 8 GPUs", p.Name, devs)
			}
		}
		slices.Sort(nodes)
		if want := []string{"dgx-1", "dgx-2", "dgx-3"}; !slices.Equal(nodes, want) {
			t.Errorf("whole-node pods on %v, want %v", nodes, want)
		}
		// Clean up: the gang and the solo pods leave, and with them their
		// devices (pod deletion ends their plans).
		for _, name := range []string{"big-0", "big-1", "big-2", "big-3", "solo-0", "solo-1", "solo-2"} {
			if err := kc.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("a gang of mixed members on a partly used cluster is placed whole", func(t *testing.T) {
		// dgx-1 has 4 GPUs held by a running pod (bound, reported by the agent).
		held := newPod("held").container("c", "nvidia.com/gpu=4", "cpu=8").obj()
		held.UID = ""
		held.Spec.NodeName = "dgx-1"
		setLimits(held)
		held, err := kc.CoreV1().Pods("default").Create(ctx, held, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gn := dgxH100("dgx-1", time.Now()).obj()
		gn.Status.Allocations = []v1alpha1.Allocation{{Namespace: "default", Pod: "held", PodUID: held.UID, Container: "c", Resource: "nvidia.com/gpu",
			DeviceIDs: []string{"GPU-dgx-1-0", "GPU-dgx-1-1", "GPU-dgx-1-2", "GPU-dgx-1-3"}}}
		publishNode(ctx, t, nil, gc, gn)
		// dgx-3 is cordoned off for this case: two nodes, one half used.
		if _, err := kc.CoreV1().Nodes().Patch(ctx, "dgx-3", "application/merge-patch+json", []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		// All pods of the last case are gone from the scheduler's view.
		waitPodsGone(ctx, t, kc, "big-0", "big-1", "big-2", "big-3", "solo-0", "solo-1", "solo-2")

		createPodGroup(ctx, t, kc, "mixed", 2)
		small := createGPUPod(ctx, t, kc, newPod("mixed-4gpu").container("c", "nvidia.com/gpu=4", "cpu=8"), "mixed")
		large := createGPUPod(ctx, t, kc, newPod("mixed-8gpu").container("c", "nvidia.com/gpu=8", "cpu=32"), "mixed")
		small, large = waitBound(ctx, t, kc, small), waitBound(ctx, t, kc, large)
		if small.Spec.NodeName != "dgx-1" || large.Spec.NodeName != "dgx-2" {
			t.Errorf("4-GPU member on %s, 8-GPU member on %s; want dgx-1 and dgx-2", small.Spec.NodeName, large.Spec.NodeName)
		}
		devs := v1alpha1.ParseDevices(small.Annotations[AnnotationDevices])
		for _, d := range devs {
			if slices.Contains(gn.Status.Allocations[0].DeviceIDs, d) {
				t.Errorf("4-GPU member planned %s, held by pod held", d)
			}
		}
	})
}
