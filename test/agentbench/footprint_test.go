//go:build linux

// Package agentbench measures the gpu-agent binary as a DaemonSet would run
// it: the process's resident memory and CPU over a minute of collection, and
// /metrics latency and size, on a simulated DGX H100 with seven MIG devices
// per GPU and 100 pods, in a cluster: a real kube-apiserver (pkg/k8stest)
// with the GPUNode CRD, the layout chosen by the node label, and the
// inventory publisher on, writing the GPUNode and GFD labels; its writes per
// minute are counted at steady state and while 100 pods come and go.
// `make bench-agent` runs it; `go test` alone skips it.
package agentbench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/mig"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

const (
	machine      = "sim:dgx-h100"
	migConfigMap = "../../manifests/base/gpu-agent-mig-config.yaml"
	migConfig    = "all-1g.10gb"
	podCount     = 100
	scrapes      = 2000
	targetP99    = 5 * time.Millisecond
	targetRSS    = 40 << 20 // bytes
	targetCPU    = 1.0      // % of one core
	clockTicks   = 100      // USER_HZ on Linux
	nodeName     = "bench-node"
)

// TestAgentFootprint is a benchmark, not a check: it prints the figures and
// their ratios to the targets; only a run that cannot measure fails.
func TestAgentFootprint(t *testing.T) {
	if os.Getenv("TESSERA_BENCH_AGENT") == "" {
		t.Skip("a one-minute benchmark; run it with make bench-agent (TESSERA_BENCH_AGENT=1)")
	}
	window := time.Minute
	if v := os.Getenv("TESSERA_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TESSERA_BENCH_WINDOW=%q: %v", v, err)
		}
		window = d
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir := t.TempDir()
	migFile := extractMIGConfig(t, dir)
	pods := holders(ctx, t, migFile)
	srv := podresourcestest.Start(t) // the pods arrive once the layout is in place

	// The cluster: a real kube-apiserver with the GPUNode CRD, and the
	// agent's Node asking for the layout by label.
	cp := k8stest.StartForTest(t)
	if err := inventorytest.InstallCRD(ctx, cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName,
		Labels: map[string]string{reconcile.MIGConfigLabel: migConfig}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	agent := agentBinary(ctx, t, dir)
	binInfo, err := os.Stat(agent)
	if err != nil {
		t.Fatal(err)
	}
	uncache(t, agent)
	addr, debugAddr := freeAddress(t), freeAddress(t)
	cmd := exec.CommandContext(ctx, agent,
		"--backend="+machine,
		"--kubeconfig="+cp.Kubeconfig, "--node-name="+nodeName,
		"--mig-config-file="+migFile,
		"--pod-resources-socket="+srv.Socket(),
		"--device-plugin-dir="+dir+"/",
		"--metrics-address="+addr,
		"--debug-address="+debugAddr,
		"--collection-interval=10s",
		"--publish-inventory=true",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gpu-agent: %v", err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := cp.Client().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		return err == nil && n.Labels[reconcile.MIGStateLabel] == reconcile.StateSuccess, nil
	})
	if err != nil {
		t.Fatalf("the agent did not apply %s: %v", migConfig, err)
	}
	srv.SetPods(pods...)
	url := "http://" + addr + "/metrics"

	// Ready: the first pass has run and attributed the pods.
	var body []byte
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		b, err := get(url, false)
		if err != nil {
			return false, nil
		}
		body = b
		return bytes.Contains(b, []byte(`pod="pod-99"`)), nil
	})
	if err != nil {
		t.Fatalf("the agent never served series of pod-99 on %s: %v", url, err)
	}
	series := 0
	for _, line := range strings.Split(string(body), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series++
		}
	}
	gz, err := get(url, true)
	if err != nil {
		t.Fatal(err)
	}

	lat := make([]time.Duration, 0, scrapes)
	for range scrapes {
		start := time.Now()
		if _, err := get(url, true); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]

	// Let the publisher write the pods' allocations before steady state.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return writes(t, url)["gpunode/change"] >= 1, nil
	})
	if err != nil {
		t.Fatalf("the agent never wrote its GPUNode: %v", err)
	}
	settle := time.NewTimer(10 * time.Second) // past MinWriteInterval and the PodResources refresh
	<-settle.C

	// The idle minute: collection every 10 s, a Prometheus-like scrape every
	// 15 s, the GPUNode's heartbeat.
	cpu0 := cpuTicks(t, cmd.Process.Pid)
	writes0 := writes(t, url)
	start := time.Now()
	scrapeEvery(t, url, window, nil)
	elapsed := time.Since(start)
	cpu := float64(cpuTicks(t, cmd.Process.Pid)-cpu0) / clockTicks / elapsed.Seconds() * 100
	mem := memory(t, cmd.Process.Pid)
	rss, hwm := mem["VmRSS"], mem["VmHWM"]
	steady := perMinute(writes0, writes(t, url), elapsed)
	if f := os.Getenv("TESSERA_BENCH_HEAP"); f != "" {
		heap, err := get("http://"+debugAddr+"/debug/pprof/heap", false)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, heap, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The churn minute: 100 pods arrive and leave, one change every
	// window/200 (each arrival replaces the oldest pod).
	changes := 0
	live := slices.Clone(pods)
	churn := func() {
		for range 2 {
			i := podCount + changes/2
			p := pods[i%podCount]
			p.Name = fmt.Sprintf("churn-%d", i)
			live = append(live[1:], p)
			changes++
		}
		srv.SetPods(live...)
	}
	cpu0, writes0 = cpuTicks(t, cmd.Process.Pid), writes(t, url)
	start = time.Now()
	scrapeEvery(t, url, window, churn)
	churnElapsed := time.Since(start)
	churnCPU := float64(cpuTicks(t, cmd.Process.Pid)-cpu0) / clockTicks / churnElapsed.Seconds() * 100
	churning := perMinute(writes0, writes(t, url), churnElapsed)
	load, _ := os.ReadFile("/proc/loadavg")

	var out strings.Builder
	fmt.Fprintf(&out, "gpu-agent footprint: %s, %s (8 GPUs x 7 MIG devices), %d pods, collection every 10s, %d series,\n"+
		"inventory publisher on (real kube-apiserver + GPUNode CRD, default heartbeat 30s, PodResources refresh 10s)\n",
		machine, migConfig, podCount, series)
	fmt.Fprintf(&out, "%-34s %12s %12s %8s\n", "measure", "value", "target", "ratio")
	row := func(name, v, target string, ratio float64) {
		fmt.Fprintf(&out, "%-34s %12s %12s %8.2f\n", name, v, target, ratio)
	}
	row(fmt.Sprintf("/metrics p50 (%d gzip scrapes)", scrapes), p50.Round(time.Microsecond).String(), "-", 0)
	row(fmt.Sprintf("/metrics p99 (%d gzip scrapes)", scrapes), p99.Round(time.Microsecond).String(), targetP99.String(), float64(p99)/float64(targetP99))
	row("/metrics bytes (text / gzip)", fmt.Sprintf("%d/%d", len(body), len(gz)), "-", 0)
	row(fmt.Sprintf("RSS after %s", window), mib(rss), mib(targetRSS), float64(rss)/targetRSS)
	row("peak RSS (VmHWM)", mib(hwm), mib(targetRSS), float64(hwm)/targetRSS)
	row("  of RSS: anonymous (heap, stacks)", mib(mem["RssAnon"]), "-", 0)
	row("  of RSS: file (the binary's pages)", mib(mem["RssFile"]), "-", 0)
	row("  binary size", mib(binInfo.Size()), "-", 0)
	row(fmt.Sprintf("CPU over %s (%% of one core)", elapsed.Round(time.Second)), fmt.Sprintf("%.3f%%", cpu), fmt.Sprintf("%.1f%%", targetCPU), cpu/targetCPU)
	row("GPUNode writes/min, steady", fmt.Sprintf("%.1f", steady["gpunode"]), "heartbeat", steady["gpunode"]/2)
	row("  of which heartbeats", fmt.Sprintf("%.1f", steady["gpunode/heartbeat"]), "2.0", 0)
	row("label writes/min, steady", fmt.Sprintf("%.1f", steady["labels"]), "0", 0)
	row(fmt.Sprintf("GPUNode writes/min, %d pod changes", changes), fmt.Sprintf("%.1f", churning["gpunode"]), "<= 13", churning["gpunode"]/13)
	row("label writes/min, churn", fmt.Sprintf("%.1f", churning["labels"]), "0", 0)
	row("CPU while churning (% of one core)", fmt.Sprintf("%.3f%%", churnCPU), "-", 0)
	fmt.Fprintf(&out, "load average (1/5/15 min) at the end: %s", load)
	t.Log("\n" + out.String())
	if f := os.Getenv("TESSERA_BENCH_OUT"); f != "" {
		if err := os.WriteFile(f, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// agentBinary returns the gpu-agent to measure: $TESSERA_BENCH_AGENT_BIN
// (make bench-agent builds it as make build does, with the Makefile's
// AGENT_TAGS and version stamps), else one built into dir with plain go build,
// which is not what ships: say so.
func agentBinary(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("TESSERA_BENCH_AGENT_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	t.Log("TESSERA_BENCH_AGENT_BIN is unset: measuring a plain go build, without the Makefile's AGENT_TAGS (make bench-agent measures what make build ships)")
	agent := filepath.Join(dir, "gpu-agent")
	build := exec.CommandContext(ctx, "go", "build", "-o", agent, "github.com/tessera-gpu/tessera/cmd/gpu-agent")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building gpu-agent: %v", err)
	}
	return agent
}

// uncache writes the file at path back and drops it from the page cache, so
// that the agent's file-backed pages come in through its own page faults, as
// on a node whose cache does not hold the binary. The kernel maps whole page
// cache folios on a fault, so a binary whose pages the cache already holds in
// large folios (written or read in large pieces) shows several MiB more
// file RSS than the same binary faulted in (26.0 and 32.1 MiB for one
// binary in two runs): uncached, runs compare.
func uncache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("writing %s back: %v", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("dropping %s from the page cache: %v", path, err)
	}
}

// scrapeEvery scrapes url every 15 s for d, as Prometheus would, and calls
// change (when not nil) 100 times over d.
func scrapeEvery(t *testing.T, url string, d time.Duration, change func()) {
	t.Helper()
	scrape := time.NewTicker(15 * time.Second)
	defer scrape.Stop()
	var changes <-chan time.Time
	if change != nil {
		tick := time.NewTicker(d / podCount)
		defer tick.Stop()
		changes = tick.C
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case <-scrape.C:
			if _, err := get(url, true); err != nil {
				t.Fatal(err)
			}
		case <-changes:
			change()
		case <-deadline.C:
			return
		}
	}
}

// writes reads tessera_inventory_writes_total from the agent's /metrics,
// by "object/reason" and by object.
func writes(t *testing.T, url string) map[string]float64 {
	t.Helper()
	body, err := get(url, false)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "tessera_inventory_writes_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, val, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(val, `"`)
		}
		out[l["object"]+"/"+l["reason"]] += v
		out[l["object"]] += v
	}
	return out
}

func perMinute(before, after map[string]float64, d time.Duration) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = (v - before[k]) / d.Minutes()
	}
	return out
}

// holders lays the MIG config out on an in-process copy of the simulated
// machine (its UUIDs are deterministic, so the agent's own copy gets the same
// ones) and gives 100 pods a time-sliced share of those MIG devices each.
func holders(ctx context.Context, t *testing.T, migFile string) []podresourcestest.Pod {
	t.Helper()
	b, err := backend.Open(ctx, machine)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := mig.Load(migFile)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := mig.NewPlan(f, migConfig, m)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = mig.NewApplier(b, "").Apply(ctx, plan); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for replica := range 2 {
		for _, d := range m.Devices {
			for _, md := range d.MIGDevices {
				ids = append(ids, fmt.Sprintf("%s::%d", md.UUID, replica))
			}
		}
	}
	if len(ids) < podCount {
		t.Fatalf("%s under %s has %d MIG shares, want at least %d", machine, migConfig, len(ids), podCount)
	}
	pods := make([]podresourcestest.Pod, podCount)
	for i := range pods {
		pods[i] = podresourcestest.Pod{
			Namespace: fmt.Sprintf("team-%d", i%10), Name: fmt.Sprintf("pod-%d", i),
			Containers: []podresourcestest.Container{{Name: "main", Devices: []podresourcestest.Device{
				{Resource: "nvidia.com/mig-1g.10gb", IDs: []string{ids[i]}},
			}}},
		}
	}
	return pods
}

// extractMIGConfig writes the config.yaml of the shipped mig-parted ConfigMap
// into dir, as the kubelet mounts it, and returns its path.
func extractMIGConfig(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(migConfigMap)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatalf("%s: %v", migConfigMap, err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// scraper keeps one connection alive, as Prometheus does, and leaves gzip
// bodies compressed.
var scraper = &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}

func get(url string, gzipped bool) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if gzipped {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := scraper.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	if gzipped && resp.Header.Get("Content-Encoding") == "gzip" {
		if _, err := gzip.NewReader(bytes.NewReader(body)); err != nil {
			return nil, fmt.Errorf("scraping %s: bad gzip body: %w", url, err)
		}
	}
	return body, nil
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// cpuTicks is utime + stime of pid, in clock ticks (proc(5)).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var sum int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("parsing /proc/%d/stat: %v", pid, err)
		}
		sum += v
	}
	return sum
}

// memory is VmRSS, VmHWM, RssAnon and RssFile of pid, in bytes.
func memory(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM" && k != "RssAnon" && k != "RssFile") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("parsing %s in /proc/%d/status: %v", k, pid, err)
		}
		out[k] = kb << 10
	}
	if out["VmRSS"] == 0 {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
