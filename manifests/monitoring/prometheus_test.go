package monitoring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	testclock "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	prt "github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
	"github.com/tessera-gpu/tessera/pkg/procmap"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
)

// simNode is the gpu-agent's /metrics for a simulated DGX H100 in a fixed
// state, served on 127.0.0.1: whole GPUs, a time-shared GPU, two GPUs in MIG
// mode, pods (from the kubelet's own PodResources server) holding some of
// each, load, a nearly full GPU, XID events and an unhealthy GPU.
type simNode struct {
	sim      *sim.Machine
	clock    *testclock.FakeClock
	machine  *gpu.Machine
	tracker  *health.Tracker
	exporter *telemetry.Exporter
	kubelet  *prt.Server
	pods     *podresources.Cache
	backend  *nvmlbackend.Backend
	registry *prometheus.Registry // the agent's own, served after the snapshot
	url      string
}

const nodeName = "dgx-01"

// Pod UIDs and container IDs of the simulated processes' cgroups.
const (
	uidInferA   = "0a0a0a0a-0000-4000-8000-00000000000a"
	uidInferB   = "0b0b0b0b-0000-4000-8000-00000000000b"
	uidNotebook = "0c0c0c0c-0000-4000-8000-00000000000c"
	ctrInferA   = "aa00000000000000000000000000000000000000000000000000000000000001"
	ctrInferB   = "bb00000000000000000000000000000000000000000000000000000000000002"
	ctrNotebook = "cc00000000000000000000000000000000000000000000000000000000000003"
)

// podCgroup is the cgroup v2 path (systemd driver, containerd) of a container.
func podCgroup(uid, container string) string {
	return "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") +
		".slice/cri-containerd-" + container + ".scope"
}

type podDirectory map[string]procmap.PodInfo

func (d podDirectory) Pod(uid string) (procmap.PodInfo, bool) { p, ok := d[uid]; return p, ok }

func startSimNode(t *testing.T) *simNode {
	t.Helper()
	ctx := context.Background()
	clk := testclock.NewFakeClock(time.Now())
	m, err := sim.Open("dgx-h100", sim.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:dgx-h100"), nvmlbackend.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	gputest.FillMIG(t, b, 4, "3g.40gb", "2g.20gb", "1g.10gb")
	gputest.FillMIG(t, b, 5, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	machine, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(i int) gpu.Device { return machine.Devices[i] }
	mig := func(i, j int) gpu.MIGDevice { return machine.Devices[i].MIGDevices[j] }

	loads := map[int]sim.Load{
		0: {SMActive: 0.8, TensorActive: 0.6, DRAMActive: 0.5, Processes: []sim.Process{{PID: 100, UsedMemoryMiB: 60000}}},
		1: {SMActive: 0.3, DRAMActive: 0.2, Processes: []sim.Process{
			{PID: 200, UsedMemoryMiB: 10000, SMUtil: 0.25, Cgroup: podCgroup(uidInferA, ctrInferA)},
			{PID: 201, UsedMemoryMiB: 12000, SMUtil: 0.05, Cgroup: podCgroup(uidInferB, ctrInferB)},
		}},
		// GPU 3 is nearly full: TesseraGPUMemoryNearlyFull must fire for it.
		3: {SMActive: 0.95, TensorActive: 0.9, DRAMActive: 0.7, Processes: []sim.Process{{PID: 300, UsedMemoryMiB: dev(3).MemoryMiB * 98 / 100}}},
	}
	for i, l := range loads {
		if err := m.SetLoad(i, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.SetMIGLoad(4, mig(4, 0).GPUInstanceID, sim.Load{SMActive: 0.7, TensorActive: 0.5,
		Processes: []sim.Process{{PID: 400, UsedMemoryMiB: 30000, ComputeInstanceID: -1}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMIGLoad(5, mig(5, 2).GPUInstanceID, sim.Load{SMActive: 0.5,
		Processes: []sim.Process{{PID: 500, UsedMemoryMiB: 5000, ComputeInstanceID: -1, Cgroup: podCgroup(uidNotebook, ctrNotebook)}}}); err != nil {
		t.Fatal(err)
	}

	devices := func(resource string, ids ...string) prt.Device { return prt.Device{Resource: resource, IDs: ids} }
	pod := func(ns, name, container string, d prt.Device) prt.Pod {
		return prt.Pod{Namespace: ns, Name: name, Containers: []prt.Container{{Name: container, Devices: []prt.Device{d}}, {Name: "sidecar"}}}
	}
	kubelet := prt.Start(t,
		pod("ml", "train-0", "trainer", devices("nvidia.com/gpu", dev(0).UUID)),
		pod("team-a", "infer-a", "server", devices("nvidia.com/gpu.shared", dev(1).UUID+"::0")),
		pod("team-b", "infer-b", "server", devices("nvidia.com/gpu.shared", dev(1).UUID+"::1")),
		pod("ml", "train-1", "trainer", devices("nvidia.com/gpu", dev(3).UUID)),
		pod("ml", "finetune-0", "worker", devices("nvidia.com/mig-3g.40gb", mig(4, 0).UUID)),
		pod("team-c", "notebook-0", "jupyter", devices("nvidia.com/mig-1g.10gb", mig(5, 2).UUID)),
	)
	pods := podresources.New(podresources.Options{Socket: kubelet.Socket(), Clock: clk})
	if err := pods.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// The agent's own registry, served after the snapshot as the agent does.
	reg := prometheus.NewRegistry()
	if err := pods.Register(reg); err != nil {
		t.Fatal(err)
	}

	// The pods whose processes run on the shared GPU and a MIG device, for
	// the per-pod usage series.
	procs, err := procmap.New(procmap.Options{Cgroups: m, Clock: clk, Pods: podDirectory{
		uidInferA:   {Namespace: "team-a", Name: "infer-a", Containers: map[string]string{ctrInferA: "server"}},
		uidInferB:   {Namespace: "team-b", Name: "infer-b", Containers: map[string]string{ctrInferB: "server"}},
		uidNotebook: {Namespace: "team-c", Name: "notebook-0", Containers: map[string]string{ctrNotebook: "jupyter"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tracker := health.NewTracker(health.DefaultPolicy(), clk, deviceplugin.TrackedGPUs(machine))
	e, err := telemetry.New(telemetry.Options{
		Backend:   b,
		Machine:   machine,
		Pods:      pods,
		Processes: procs,
		Health:    tracker,
		NodeName:  nodeName,
		Clock:     clk,
		FatalXID:  tracker.Policy().IsFatalXID,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := &simNode{sim: m, clock: clk, machine: machine, tracker: tracker, exporter: e, kubelet: kubelet, pods: pods, backend: b, registry: reg}
	n.observe(gpu.Event{Kind: gpu.EventXID, Index: 2, UUID: dev(2).UUID, XID: 13, GPUInstanceID: -1, ComputeInstanceID: -1})
	n.observe(gpu.Event{Kind: gpu.EventXID, Index: 7, UUID: dev(7).UUID, XID: 79, GPUInstanceID: -1, ComputeInstanceID: -1})
	// Two passes a collection interval apart: GPM readings need a previous sample.
	n.refresh(ctx)
	n.refresh(ctx)

	srv := httptest.NewServer(e.Handler(reg))
	t.Cleanup(srv.Close)
	n.url = srv.URL
	return n
}

func (n *simNode) observe(ev gpu.Event) {
	n.tracker.Observe(ev)
	n.exporter.ObserveEvent(ev)
}

func (n *simNode) refresh(ctx context.Context) {
	n.clock.Step(10 * time.Second)
	n.exporter.Refresh(ctx)
}

// failingLayout is the MIG config the layout manager is asked for and must
// refuse: an H100 has seven 1g.10gb slices, not eight.
const failingLayout = "all-8x1g.10gb"

// startLayoutManager runs the agent's MIG layout manager (pkg/mig/reconcile,
// with pkg/mig's real planner on the simulated machine) against a real
// kube-apiserver, for a Node that asks for failingLayout, and waits for the
// node's state to become failed. Its metrics go to the agent's registry. It
// returns why it did not run, or "".
func startLayoutManager(t *testing.T, n *simNode) string {
	t.Helper()
	ctx := context.Background()
	if os.Getenv(k8stest.EnvSkip) == "1" {
		return "the layout manager needs etcd and kube-apiserver (" + k8stest.EnvSkip + "=1)"
	}
	cp := k8stest.StartForTest(t)
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	agentClient, err := kube.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: nodeName, Labels: map[string]string{reconcile.MIGConfigLabel: failingLayout},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dpDir := filepath.Join(dir, "device-plugin")
	if err := os.Mkdir(dpDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dpDir, "mixed"), []byte("version: v1\nflags:\n  migStrategy: mixed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	migFile, err := filepath.Abs("testdata/mig-configs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mgr := deviceplugin.NewManager(deviceplugin.Config{PluginDir: filepath.Join(dir, "plugins")}, n.tracker)
	cfgr := deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: dpDir, Default: "mixed"}, mgr, n.machine)
	if _, err := cfgr.Apply(ctx, ""); err != nil {
		t.Fatal(err)
	}
	metrics, err := reconcile.NewMetrics(n.registry)
	if err != nil {
		t.Fatal(err)
	}
	recorder, stopEvents := kube.NewEventRecorder(ctx, agentClient, "tessera-gpu-agent", nodeName)
	t.Cleanup(stopEvents)
	r, err := reconcile.New(reconcile.Config{
		NodeName:   nodeName,
		Client:     agentClient,
		Recorder:   recorder,
		Machine:    n.machine,
		Discoverer: n.backend,
		Layouts:    reconcile.MIGLayouts{File: migFile, Applier: mig.NewApplier(n.backend, filepath.Join(dir, "mig-journal.json"))},
		Pods:       n.pods,
		Sharing:    cfgr,
		Devices:    mgr,
		Health:     n.tracker,
		Metrics:    metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("layout manager Run: %v", err)
		}
	})
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return node.Labels[reconcile.MIGStateLabel] == reconcile.StateFailed, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s=%s: %v", reconcile.MIGStateLabel, reconcile.StateFailed, err)
	}
	return ""
}

// promServer is a real Prometheus (the Debian package's binary) on
// 127.0.0.1 with its own data directory.
type promServer struct {
	api    promv1.API
	url    string
	stderr *lockedBuffer
	exited chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs Prometheus scraping target every second, with
// rules loaded, and waits until it is ready.
func startPrometheus(ctx context.Context, t *testing.T, bin, target string, rules []byte) *promServer {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	// honor_labels as in gpu-agent-podmonitor.yaml: the pod labels of GPU series are kept.
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: gpu-agent
    honor_labels: true
    static_configs:
      - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	procCtx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(procCtx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	p := &promServer{url: "http://" + addr, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.exited
	})
	client, err := api.NewClient(api.Config{Address: p.url})
	if err != nil {
		t.Fatal(err)
	}
	p.api = promv1.NewAPI(client)
	p.waitFor(ctx, t, "Prometheus to be ready", 60*time.Second, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/-/ready", nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return p
}

// waitFor polls cond until it holds, Prometheus exits or timeout passes.
func (p *promServer) waitFor(ctx context.Context, t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.exited:
			return false, errors.New("prometheus exited")
		default:
		}
		ok, err := cond(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)\nprometheus log:\n%s", what, err, last, p.stderr.String())
	}
}

// query evaluates expr now and returns the instant vector.
func (p *promServer) query(ctx context.Context, expr string) (model.Vector, error) {
	v, warnings, err := p.api.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("warnings: %v", warnings)
	}
	switch v := v.(type) {
	case model.Vector:
		return v, nil
	case *model.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: v.Value, Timestamp: v.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("result type %s, want a vector", v.Type())
	}
}

// TestPrometheus runs a real Prometheus scraping the gpu-agent's exporter on
// a simulated DGX H100 and evaluates every query of Tessera's dashboard, every
// query of NVIDIA's dcgm-exporter dashboard and every alert expression,
// asserting each returns series.
func TestPrometheus(t *testing.T) {
	r := loadRule(t)
	d := loadDashboard(t)
	bin := requireTool(t, "prometheus")
	ctx := context.Background()

	node := startSimNode(t)
	layoutsSkipped := startLayoutManager(t, node)
	target := strings.TrimPrefix(node.url, "http://")
	prom := startPrometheus(ctx, t, bin, target, rulesFile(t, r))

	prom.waitFor(ctx, t, "the gpu-agent target to be up", 60*time.Second, func(ctx context.Context) (bool, error) {
		res, err := prom.api.Targets(ctx)
		if err != nil {
			return false, err
		}
		for _, tg := range res.Active {
			if tg.ScrapeURL == node.url+"/metrics" {
				if tg.Health != promv1.HealthGood {
					return false, fmt.Errorf("target %s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
				}
				return true, nil
			}
		}
		return false, fmt.Errorf("target %s not active yet", node.url)
	})
	// rate and increase need two samples in their range; wait for a few.
	prom.waitFor(ctx, t, "three scrapes", 60*time.Second, func(ctx context.Context) (bool, error) {
		v, err := prom.query(ctx, `count_over_time(up{job="gpu-agent"}[5m])`)
		return err == nil && len(v) == 1 && v[0].Value >= 3, err
	})

	// A fatal XID between scrapes: TesseraGPUFatalXID fires on the increase.
	node.observe(gpu.Event{Kind: gpu.EventXID, Index: 7, UUID: node.machine.Devices[7].UUID, XID: 79, GPUInstanceID: -1, ComputeInstanceID: -1})
	node.refresh(ctx)
	prom.waitFor(ctx, t, "the second XID 79 to be scraped", 60*time.Second, func(ctx context.Context) (bool, error) {
		v, err := prom.query(ctx, `max(tessera_gpu_xid_errors_total{xid="79"})`)
		return err == nil && len(v) == 1 && v[0].Value == 2, err
	})
	prom.waitFor(ctx, t, "TesseraGPUFatalXID to fire", 60*time.Second, func(ctx context.Context) (bool, error) {
		res, err := prom.api.Alerts(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range res.Alerts {
			if a.Labels["alertname"] == "TesseraGPUFatalXID" && a.State == promv1.AlertStateFiring {
				return true, nil
			}
		}
		return false, nil
	})

	t.Run("rules evaluate without errors", func(t *testing.T) {
		res, err := prom.api.Rules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range res.Groups {
			for _, ru := range g.Rules {
				a, ok := ru.(promv1.AlertingRule)
				if !ok {
					continue
				}
				n++
				if a.Health != promv1.RuleHealthGood || a.LastError != "" {
					t.Errorf("alert %s: health %s, error %q", a.Name, a.Health, a.LastError)
				}
			}
		}
		if want := len(alerts(r)); n != want {
			t.Errorf("Prometheus loaded %d alerting rules, want %d", n, want)
		}
	})

	expectSeries := func(t *testing.T, name, expr string) model.Vector {
		t.Helper()
		v, err := prom.query(ctx, expr)
		if err != nil {
			t.Errorf("%s: %s: %v", name, expr, err)
			return nil
		}
		if len(v) == 0 {
			t.Errorf("%s returns no series: %s", name, expr)
		}
		return v
	}

	t.Run("tessera dashboard", func(t *testing.T) {
		queries := dashboardQueries(d)
		for _, q := range queries {
			if layoutsSkipped != "" && strings.Contains(q.Expr, "tessera_mig_layout_") {
				t.Logf("NOT CHECKED %s: %s", q.Name, layoutsSkipped)
				continue
			}
			expectSeries(t, q.Name, substitute(q.Expr))
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				checkVariable(t, prom, v.Name, v.Definition)
			}
		}
		t.Logf("evaluated %d dashboard queries", len(queries))
	})

	t.Run("dcgm-exporter dashboard 12239", func(t *testing.T) {
		data, err := os.ReadFile(dcgmQueryPath)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Dashboards []struct {
				Source    string
				Variables []struct{ Name, Query string }
				Queries   []struct{ Panel, Expr string }
			}
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, db := range f.Dashboards {
			for _, q := range db.Queries {
				expectSeries(t, db.Source+": "+q.Panel, substitute(q.Expr))
				n++
			}
			for _, v := range db.Variables {
				checkVariable(t, prom, v.Name, v.Query)
			}
		}
		if n == 0 {
			t.Fatal("no dcgm-exporter dashboard queries")
		}
		t.Logf("evaluated %d dcgm-exporter dashboard queries", n)
	})

	// Every alert expression, with its comparisons in bool form, returns a
	// series for everything it looks at. The simulated node is set up so
	// that some alerts fire (their expression as written returns the series
	// named here) and the others do not.
	dev := func(i int) string { return node.machine.Devices[i].UUID }
	type firingOn struct {
		label  model.LabelName
		values []string
	}
	firing := map[string]firingOn{
		"TesseraGPUFatalXID":           {"UUID", []string{dev(7)}},
		"TesseraGPUUnhealthy":          {"UUID", []string{dev(7)}},
		"TesseraGPUMemoryNearlyFull":   {"UUID", []string{dev(3)}},
		"TesseraMIGLayoutChangeFailed": {"config", []string{failingLayout}},
		"TesseraGPUHotButIdle":         {}, // the simulated GPUs run cool
		"TesseraPodAttributionDown":    {}, // the kubelet answers, until "kubelet gone"
	}
	for _, a := range alerts(r) {
		t.Run("alert "+a.Alert, func(t *testing.T) {
			if layoutsSkipped != "" && strings.Contains(a.Expr, "tessera_mig_layout_") {
				t.Skipf("NOT CHECKED: %s", layoutsSkipped)
			}
			expectSeries(t, a.Alert+" in bool form", boolify(a.Expr))
			want, ok := firing[a.Alert]
			if !ok {
				t.Fatalf("the test does not say whether %s fires on the simulated node", a.Alert)
			}
			v, err := prom.query(ctx, a.Expr)
			if err != nil {
				t.Fatalf("%s: %v", a.Expr, err)
			}
			var got []string
			for _, s := range v {
				got = append(got, string(s.Metric[want.label]))
			}
			if strings.Join(got, ",") != strings.Join(want.values, ",") {
				t.Errorf("%s fires for %s %v, want %v:\n%s", a.Alert, want.label, got, want.values, v)
			}
		})
	}

	t.Run("kubelet gone", func(t *testing.T) {
		node.kubelet.Stop()
		if err := node.pods.Refresh(ctx); err == nil {
			t.Fatal("PodResources refresh succeeded without the kubelet")
		}
		prom.waitFor(ctx, t, "tessera_podresources_up 0 to be scraped", 60*time.Second, func(ctx context.Context) (bool, error) {
			v, err := prom.query(ctx, `tessera_podresources_up`)
			return err == nil && len(v) == 1 && v[0].Value == 0, err
		})
		for _, a := range alerts(r) {
			if a.Alert != "TesseraPodAttributionDown" {
				continue
			}
			v := expectSeries(t, a.Alert, a.Expr)
			if len(v) != 1 || string(v[0].Metric["instance"]) != target {
				t.Errorf("%s = %v, want one series for instance %s", a.Alert, v, target)
			}
		}
	})
}

// checkVariable evaluates a Grafana label_values(...) variable query the way
// Grafana does, through the series or label-values API, and wants values.
func checkVariable(t *testing.T, prom *promServer, name, definition string) {
	t.Helper()
	m := labelValuesQuery.FindStringSubmatch(definition)
	if m == nil {
		t.Errorf("variable %s: %q is not label_values(...)", name, definition)
		return
	}
	ctx := context.Background()
	end := time.Now()
	start := end.Add(-time.Hour)
	selector, label := substitute(m[1]), m[2]
	var values []string
	if selector == "" {
		lv, _, err := prom.api.LabelValues(ctx, label, nil, start, end)
		if err != nil {
			t.Errorf("variable %s: %v", name, err)
			return
		}
		for _, v := range lv {
			values = append(values, string(v))
		}
	} else {
		series, _, err := prom.api.Series(ctx, []string{selector}, start, end)
		if err != nil {
			t.Errorf("variable %s: %s: %v", name, selector, err)
			return
		}
		for _, s := range series {
			if v := s[model.LabelName(label)]; v != "" {
				values = append(values, string(v))
			}
		}
	}
	if len(values) == 0 {
		t.Errorf("variable %s: %s has no values", name, definition)
	}
}
