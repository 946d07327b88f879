package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	e2ecluster "github.com/tessera-gpu/tessera/test/e2e/cluster"
	"github.com/tessera-gpu/tessera/test/e2e/kubelet"
)

// Device-plugin configs of the fleet's agents: MIG slices under their own
// resource names, and every GPU time-shared in quarters.
const (
	fleetMixedConfig  = "version: v1\nflags:\n  migStrategy: mixed\n"
	fleetSharedConfig = "version: v1\nflags:\n  migStrategy: mixed\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      rename: nvidia.com/gpu.shared\n      replicas: 4\n"
)

// fleetNode is one simulated machine of TestAgentsPublishTheFleet.
type fleetNode struct {
	name, machine string
	// mig cuts the listed GPUs into seven 1g.10gb slices before the agent starts.
	mig []int
	// config is the agent's default device-plugin config.
	config string
}

// TestAgentsPublishTheFleet runs a fleet in which nothing about the GPUs is
// written by hand: per node the kubelet stand-in of test/e2e/kubelet (the
// kubelet's own device manager and PodResources server, in its own mount
// namespace) and the gpu-agent built by agent.New on a simulated machine,
// whose publisher writes the GPUNode and the GFD labels; the real
// kube-apiserver and kube-scheduler (in-process, Tessera as a second
// scheduler) place the pods an MLOps stack creates. Each pod is submitted
// once the previous one is admitted and reported, so that the kubelet asks
// the agent's GetPreferredAllocation (its own choice: IgnoreSchedulerPlans)
// for the same free set the scheduler planned on: the devices the pod gets
// must be the planned ones. It runs in a child process (inChild): it
// starts its own kube-scheduler.
func TestAgentsPublishTheFleet(t *testing.T) {
	if err := kubelet.Supported(); err != nil {
		if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
			t.Fatalf("kubelet stand-ins cannot start and TESSERA_REQUIRE_TOOLS=1: %v", err)
		}
		t.Skipf("kubelet stand-ins cannot start here: %v", err)
	}
	if !inChild(t, "TestAgentsPublishTheFleet") {
		return
	}
	cp := k8stest.StartForTest(t)
	ctx, cancel, gc := gpuNodeAPI(t, cp)
	defer cancel()
	ctx = klog.NewContext(ctx, ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1))))
	kc := cp.Client()
	// Socket paths must stay short (108 bytes): not under t.TempDir().
	dir, err := os.MkdirTemp("", "tessera-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	dpDir := filepath.Join(dir, "device-plugin")
	if err := os.Mkdir(dpDir, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"mixed": fleetMixedConfig, "shared": fleetSharedConfig} {
		if err := os.WriteFile(filepath.Join(dpDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	fleet := []fleetNode{
		{name: "dgx-1", machine: "dgx-h100", config: "mixed"}, {name: "dgx-2", machine: "dgx-h100", config: "mixed"},
		{name: "dgx-3", machine: "dgx-h100", config: "mixed"}, {name: "dgx-4", machine: "dgx-h100", config: "mixed"},
		{name: "dgx-mig", machine: "dgx-h100", mig: []int{4, 5, 6, 7}, config: "mixed"},
		{name: "l40s-1", machine: "pcie-4xl40s", config: "mixed"},
		{name: "ts-1", machine: "pcie-4xl40s", config: "shared"},
	}
	for _, n := range fleet {
		nd := filepath.Join(dir, n.name)
		scfg := kubelet.Config{NodeName: n.name, Kubeconfig: cp.Kubeconfig, VarLib: filepath.Join(nd, "varlib"),
			PodResourcesSocket: filepath.Join(nd, "pr.sock"), CPU: "224", Memory: "2Ti"}
		if err := os.MkdirAll(scfg.VarLib, 0o750); err != nil {
			t.Fatal(err)
		}
		standin, err := kubelet.Start(scfg, filepath.Join(nd, "kubelet.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := standin.Stop(); err != nil {
				t.Errorf("%v (log %s)", err, filepath.Join(nd, "kubelet.log"))
			}
		})
		machine := filepath.Join(nd, "machine.yaml")
		if err := e2ecluster.WriteMachine(repo, n.machine, n.name, machine); err != nil {
			t.Fatal(err)
		}
		b, err := backend.Open(ctx, "sim:"+machine)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		for _, g := range n.mig {
			gputest.FillMIG(t, b, g, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
		}
		nodeClient, err := kube.NewForConfig(cp.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(ctx, agent.Config{
			Backend: b, Client: nodeClient, GPUNodes: gc, NodeName: n.name, MachineType: n.machine,
			PluginDir: scfg.PluginDir(), PodResourcesSocket: scfg.PodResourcesSocket, PodResourcesInterval: 100 * time.Millisecond,
			DevicePluginConfigDir: dpDir, DevicePluginConfigDefault: n.config, NodeReadTimeout: 30 * time.Second,
			InventoryMinWriteInterval: 100 * time.Millisecond, InventoryResyncInterval: 100 * time.Millisecond,
			IgnoreSchedulerPlans: true, Registry: prometheus.NewRegistry(),
		})
		if err != nil {
			t.Fatalf("agent of %s: %v", n.name, err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent of %s: %v", n.name, err)
			}
		})
	}
	// Every node advertises what its agent publishes: GPUNode and kubelet agree.
	poll(ctx, t, "the fleet's GPUNodes and allocatable GPUs", func() (bool, error) {
		for _, n := range fleet {
			gn, err := gc.Get(ctx, n.name)
			if err != nil || len(gn.Status.GPUs) == 0 {
				return false, nil //nolint:nilerr // not published yet
			}
			node, err := kc.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for res, count := range e2ecluster.Advertised(gn) {
				if q := node.Status.Allocatable[corev1.ResourceName(res)]; q.Value() != int64(count) {
					return false, nil
				}
			}
			if node.Labels["nvidia.com/gpu.product"] == "" {
				return false, nil
			}
		}
		return true, nil
	})

	startScheduler(ctx, t, cancel, cp.Kubeconfig, "      staleAfter: 10m", tesseraBinds)

	// place submits a pod and waits until it runs and its node's agent
	// reports its devices; it returns the node, the planned and the
	// allocated devices (GPU or MIG UUIDs; share units as their GPU).
	place := func(t *testing.T, b *podBuilder) (string, []string, []string) {
		t.Helper()
		pod := createGPUPod(ctx, t, kc, b, "")
		var node string
		var planned, got []string
		poll(ctx, t, "pod "+pod.Name+" running with its devices reported", func() (bool, error) {
			p, err := kc.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.Phase == corev1.PodFailed {
				return false, fmt.Errorf("pod %s failed on %s: %s", p.Name, p.Spec.NodeName, p.Status.Message)
			}
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
			gn, err := gc.Get(ctx, p.Spec.NodeName)
			if err != nil {
				return false, err
			}
			node, planned, got = p.Spec.NodeName, v1alpha1.ParseDevices(p.Annotations[AnnotationDevices]), nil
			for _, a := range gn.Status.Allocations {
				if a.PodUID == p.UID || a.PodUID == "" && a.Namespace == p.Namespace && a.Pod == p.Name {
					for _, id := range a.DeviceIDs {
						base, _, _ := strings.Cut(id, "::")
						if !slices.Contains(got, base) {
							got = append(got, base)
						}
					}
				}
			}
			slices.Sort(got)
			return len(got) > 0, nil
		})
		if len(planned) == 0 {
			t.Errorf("pod %s on %s carries no plan", pod.Name, node)
		}
		if !slices.Equal(planned, got) {
			gn, err := gc.Get(ctx, node)
			if err != nil {
				t.Fatal(err)
			}
			t.Errorf("pod %s on %s: the scheduler planned %v, the kubelet allocated %v (the agent's GetPreferredAllocation for the same free set)",
				pod.Name, node, positions(gn, planned), positions(gn, got))
		}
		return node, planned, got
	}

	t.Run("PyTorchJob master and 3 workers of 8 GPUs take the whole DGXs", func(t *testing.T) {
		var nodes []string
		for _, n := range []string{"job-master-0", "job-worker-0", "job-worker-1", "job-worker-2"} {
			node, _, got := place(t, newPod(n).container("pytorch", "nvidia.com/gpu=8", "cpu=32", "memory=256Gi").
				label("training.kubeflow.org/job-name", "llm").label("training.kubeflow.org/replica-type", strings.TrimSuffix(strings.TrimPrefix(n, "job-"), "-0")))
			nodes = append(nodes, node)
			if len(got) != 8 {
				t.Errorf("%s holds %v, want 8 GPUs", n, got)
			}
		}
		slices.Sort(nodes)
		if want := []string{"dgx-1", "dgx-2", "dgx-3", "dgx-4"}; !slices.Equal(nodes, want) {
			t.Errorf("job on %v, want %v", nodes, want)
		}
	})
	t.Run("a 4-GPU job needing NVLink takes the MIG-mixed DGX's whole half", func(t *testing.T) {
		node, _, got := place(t, newPod("nvlink-job").container("c", "nvidia.com/gpu=4", "cpu=8").annotate(AnnotationInterconnect, "nvlink"))
		if node != "dgx-mig" || len(got) != 4 {
			t.Errorf("on %s with %v, want 4 GPUs of dgx-mig", node, got)
		}
	})
	t.Run("KServe predictor on a MIG slice", func(t *testing.T) {
		node, _, got := place(t, newPod("predictor").container("kserve-container", "nvidia.com/mig-1g.10gb=1", "cpu=2").
			label("serving.kserve.io/inferenceservice", "fraud"))
		if node != "dgx-mig" || len(got) != 1 || !strings.HasPrefix(got[0], "MIG-") {
			t.Errorf("on %s with %v, want one MIG slice of dgx-mig", node, got)
		}
	})
	t.Run("notebooks on shares pack one GPU", func(t *testing.T) {
		var gpus []string
		for _, n := range []string{"alice", "bob", "carol"} {
			node, _, got := place(t, newPod(n).container("jupyter", "nvidia.com/gpu.shared=1", "cpu=1"))
			if node != "ts-1" || len(got) != 1 {
				t.Errorf("notebook %s on %s with %v, want one GPU of ts-1", n, node, got)
				continue
			}
			gpus = append(gpus, got[0])
		}
		if len(slices.Compact(slices.Clone(gpus))) != 1 {
			t.Errorf("notebooks on %v, want one GPU (packed)", gpus)
		}
	})
	t.Run("a pod with node affinity on the product", func(t *testing.T) {
		node, _, got := place(t, newPod("l40s-infer").container("c", "nvidia.com/gpu=2", "cpu=4").requireProducts(corev1.NodeSelectorOpIn, l40s))
		if node != "l40s-1" || len(got) != 2 {
			t.Errorf("on %s with %v, want 2 GPUs of l40s-1", node, got)
		}
	})
}

// poll waits up to 90 s for cond.
func poll(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (b *podBuilder) label(k, v string) *podBuilder {
	if b.p.Labels == nil {
		b.p.Labels = map[string]string{}
	}
	b.p.Labels[k] = v
	return b
}

// positions names devices by their place in the GPUNode: "GPU 3", "GPU 5
// slice at 6".
func positions(gn *v1alpha1.GPUNode, ids []string) []string {
	var out []string
	for _, id := range ids {
		name := id
		for _, g := range gn.Status.GPUs {
			if g.UUID == id {
				name = fmt.Sprintf("GPU %d", g.Index)
			}
			for _, sl := range g.MIGSlices {
				if sl.UUID == id {
					name = fmt.Sprintf("GPU %d slice %s at %d", g.Index, sl.Profile, sl.Placement.Start)
				}
			}
		}
		out = append(out, name)
	}
	return out
}
