// Package e2e runs `make demo`'s scenario (test/e2e/cluster) as a test: a
// real control plane, six simulated GPU nodes with real gpu-agent processes
// and kubelet stand-ins around the kubelet's device manager, the real
// gpu-scheduler, the MLOps pods and a MIG layout change; it asserts where
// the pods land, the devices they hold, the layout change, the metrics, the
// refusal and that teardown leaves no process behind.
package e2e

import (
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/test/e2e/cluster"
	"github.com/tessera-gpu/tessera/test/e2e/kubelet"
)

func TestMain(m *testing.M) {
	kubelet.RunIfChild() // the stand-ins are this test binary in their own namespaces
	os.Exit(m.Run())
}

// binDirEnv names a directory holding gpu-agent and gpu-scheduler already
// built (make test sets it); without it the test builds them.
const binDirEnv = "TESSERA_BIN_DIR"

func TestFleet(t *testing.T) {
	if os.Getenv(k8stest.EnvSkip) == "1" {
		t.Skipf("skipping: needs etcd and kube-apiserver (%s=1)", k8stest.EnvSkip)
	}
	if err := kubelet.Supported(); err != nil {
		if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
			t.Fatalf("kubelet stand-ins cannot run here and TESSERA_REQUIRE_TOOLS=1: %v", err)
		}
		t.Skipf("skipping: kubelet stand-ins cannot run here: %v", err)
	}
	bin := binaries(t)
	k8sBin := os.Getenv(k8stest.EnvBinDir)
	if k8sBin == "" {
		k8sBin = filepath.Join("..", "..", "bin")
	}
	dir, err := os.MkdirTemp("", "tessera-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := klog.NewContext(context.WithoutCancel(t.Context()), ktesting.NewLogger(t, ktesting.NewConfig()))
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, BinDir: bin, K8sBinDir: k8sBin,
		Progress: func(f string, a ...any) { t.Logf("%5.1fs "+f, append([]any{time.Since(start).Seconds()}, a...)...) }})
	if errors.Is(err, k8stest.ErrBinaryMissing) {
		t.Fatalf("%v (or set %s=1 to skip)", err, k8stest.EnvSkip)
	}
	if err != nil {
		dumpLogs(t, dir)
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()
	res, err := c.RunScenario(ctx)
	if err != nil {
		dumpLogs(t, dir)
		t.Fatal(err)
	}
	t.Logf("scenario took %.1fs", res.Took.Seconds())

	checkPlacements(t, res)
	checkRelabel(t, res)
	checkMetrics(t, res)
	checkFragmentation(t, res)

	pids := c.Pids()
	stopped = true
	if err := c.Stop(); err != nil {
		t.Errorf("stopping the cluster: %v", err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left after Stop:\n%s", strings.Join(left, "\n"))
	}
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			t.Errorf("process %d of the cluster still exists after Stop", pid)
		}
	}
	t.Logf("whole test %.1fs", time.Since(start).Seconds())
}

func checkPlacements(t *testing.T, res *cluster.Result) {
	t.Helper()
	pods := map[string]cluster.PodResult{}
	held := map[string]string{} // device ID -> pod
	for _, p := range res.Pods {
		pods[p.Workload.Name] = p
		w := p.Workload
		if w.Impossible {
			if p.Node != "" {
				t.Errorf("%s was placed on %s; no node has %v", w.Key(), p.Node, w.Products)
			}
			if !strings.Contains(p.Refusal, "no node has a GPU of product NVIDIA-B200 (nvidia.com/gpu.product); products in the cluster: NVIDIA-GeForce-RTX-4090, NVIDIA-H100-80GB-HBM3, NVIDIA-L40S") {
				t.Errorf("%s refusal = %q, want Tessera's reason naming the missing product and those in the cluster", w.Key(), p.Refusal)
			}
			continue
		}
		if p.Phase != "Running" || p.Node == "" {
			t.Errorf("%s: phase %s on node %q, want Running", w.Key(), p.Phase, p.Node)
			continue
		}
		if int64(len(p.Devices)) != w.Count {
			t.Errorf("%s holds %v, want %d devices of %s", w.Key(), p.DeviceIDs(), w.Count, w.Resource)
		}
		if len(p.Planned) == 0 {
			t.Errorf("%s has no %s annotation", w.Key(), cluster.AnnotationDevices)
		}
		for _, d := range p.Devices {
			if other, ok := held[p.Node+"/"+d.ID]; ok {
				t.Errorf("device %s of %s is held by %s and %s", d.ID, p.Node, other, w.Key())
			}
			held[p.Node+"/"+d.ID] = w.Key()
			for _, prod := range w.Products {
				if d.Product != prod {
					t.Errorf("%s pinned to %s got %s on %s", w.Key(), prod, d, d.Product)
				}
			}
		}
		if w.NVLink && p.Interconnect != "nvswitch" && p.Interconnect != "nvlink" {
			t.Errorf("%s needs NVLink; its GPUs %v on %s are linked by %q", w.Key(), p.DeviceIDs(), p.Node, p.Interconnect)
		}
		if profile, ok := strings.CutPrefix(w.Resource, "nvidia.com/mig-"); ok {
			for _, d := range p.Devices {
				if d.MIGProfile != profile {
					t.Errorf("%s asks for MIG %s and holds %s", w.Key(), profile, d)
				}
			}
		}
		if w.Resource == "nvidia.com/gpu.shared" {
			for _, d := range p.Devices {
				if d.Replicas != 4 || d.GPU != p.Devices[0].GPU || p.Node != "ts-1" {
					t.Errorf("%s asks for shares of one GPU and holds %s on %s", w.Key(), d, p.Node)
				}
			}
		}
		if w.Resource == "nvidia.com/gpu" {
			for _, d := range p.Devices {
				if d.MIGProfile != "" || d.Replicas > 1 {
					t.Errorf("%s asks for whole GPUs and holds %s", w.Key(), d)
				}
			}
		}
		if p.Why == "" {
			t.Errorf("%s: no explanation of its placement", w.Key())
		}
	}
	// The trainers share no node with anything but each other and the MIG
	// and notebook pods stay off the whole-GPU DGX: packing keeps whole
	// machines whole.
	for _, name := range []string{"llm-finetune-master-0", "llm-finetune-worker-0", "vision-pretrain-0"} {
		if n := pods[name].Node; !strings.HasPrefix(n, "dgx-h100-") {
			t.Errorf("%s (4 NVLink GPUs) landed on %s, want a DGX H100", name, n)
		}
	}
	if m, w := pods["llm-finetune-master-0"].Node, pods["llm-finetune-worker-0"].Node; m != w {
		t.Errorf("PyTorchJob master on %s and worker on %s; Tessera packs the job onto the DGX it fills", m, w)
	}
	notebookGPU := map[int]bool{}
	for _, name := range []string{"alice-0", "bob-0", "carol-0"} {
		for _, d := range pods[name].Devices {
			notebookGPU[d.GPU] = true
		}
	}
	if len(notebookGPU) != 1 {
		t.Errorf("the notebooks (4 units) spread over GPUs %v of ts-1; the packed share policy puts them on one", notebookGPU)
	}
	for _, name := range []string{"fraud-predictor-0", "fraud-predictor-1", "ranker-predictor-0", "llm-predictor-0", "llm-predictor-1"} {
		if n := pods[name].Node; n != cluster.RelabelNode {
			t.Errorf("%s landed on %s, the only MIG node is %s", name, n, cluster.RelabelNode)
		}
	}
	// The agents follow the plan of the pod being admitted: every pod holds
	// the devices the scheduler planned, whatever order the kubelet admits
	// them in.
	for _, p := range res.Pods {
		if p.Node != "" && !p.AsPlanned() {
			t.Errorf("%s holds %v on %s, the scheduler planned %v", p.Workload.Key(), p.DeviceIDs(), p.Node, p.Planned)
		}
	}
}

func checkRelabel(t *testing.T, res *cluster.Result) {
	t.Helper()
	r := res.Relabel
	if r.From != cluster.LayoutMixed || r.To != cluster.LayoutMixed3g || len(r.States) == 0 || r.States[len(r.States)-1] != "success" {
		t.Errorf("relabel %s -> %s states %v, want %s -> %s ending in success", r.From, r.To, r.States, cluster.LayoutMixed, cluster.LayoutMixed3g)
	}
	wantBefore := map[string]int{"nvidia.com/gpu": 4, "nvidia.com/mig-1g.10gb": 28}
	wantAfter := map[string]int{"nvidia.com/gpu": 4, "nvidia.com/mig-1g.10gb": 14, "nvidia.com/mig-3g.40gb": 4}
	if !maps.Equal(r.Before, wantBefore) || !maps.Equal(r.After, wantAfter) {
		t.Errorf("advertised before %v after %v, want %v and %v", r.Before, r.After, wantBefore, wantAfter)
	}
	for _, p := range res.Pods {
		if !p.Workload.AfterRelabel {
			continue
		}
		for _, d := range p.Devices {
			if d.GPU != 6 && d.GPU != 7 {
				t.Errorf("%s holds %s; the new 3g.40gb slices are on GPUs 6 and 7", p.Workload.Key(), d)
			}
		}
	}
}

func checkMetrics(t *testing.T, res *cluster.Result) {
	t.Helper()
	for _, n := range res.Nodes {
		if n.Series == 0 {
			t.Errorf("the agent of %s serves no series at %s", n.Name, n.MetricsURL)
		}
		for _, p := range res.Pods {
			if p.Node == n.Name && !slices.Contains(n.PodsInMetrics, p.Workload.Name) {
				t.Errorf("no series of %s's agent carries pod %q (pods named: %v)", n.Name, p.Workload.Name, n.PodsInMetrics)
			}
		}
	}
}

func checkFragmentation(t *testing.T, res *cluster.Result) {
	t.Helper()
	if len(res.Fragmentation) != 3 {
		t.Fatalf("fragmentation samples %v, want 3", res.Fragmentation)
	}
	empty, loaded := res.Fragmentation[0], res.Fragmentation[1]
	if empty.FreeGPUs <= loaded.FreeGPUs || loaded.FreeGPUs <= 0 {
		t.Errorf("free GPUs %v empty, %v with the workloads: want fewer, but some, free", empty.FreeGPUs, loaded.FreeGPUs)
	}
	for _, f := range res.Fragmentation {
		if f.FragmentedGPUs < 0 || f.FragmentedGPUs > f.FreeGPUs {
			t.Errorf("%s: %v fragmented of %v free GPUs", f.When, f.FragmentedGPUs, f.FreeGPUs)
		}
	}
}

// binaries returns a directory with gpu-agent and gpu-scheduler.
func binaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv(binDirEnv); dir != "" {
		return dir
	}
	dir := t.TempDir()
	for _, cmd := range []string{"gpu-agent", "gpu-scheduler"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "github.com/tessera-gpu/tessera/cmd/"+cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", cmd, err, out)
		}
	}
	return dir
}

// dumpLogs prints the tail of every log of the cluster, for a failed run.
func dumpLogs(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil //nolint:nilerr // best effort
		}
		data, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		t.Logf("--- %s (last 20 lines)\n%s", path, strings.Join(lines[max(0, len(lines)-20):], "\n"))
		return nil
	})
}
