// Command demo runs Tessera's main job on one simulated GPU node, with no GPU
// and no cluster needed: a real etcd + kube-apiserver, a Node for a simulated
// DGX H100, and bin/gpu-agent serving it. It then walks through what an
// operator does: check a MIG layout offline, relabel the node and watch
// nvidia.com/mig.config.state, read the Events and the DCGM-compatible
// metrics, try a layout that cannot fit, and, when the Alibaba traces are
// there, replay one under FGD and Tessera's placement. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

const (
	nodeName   = "dgx-demo-1"
	machine    = "sim:dgx-h100"
	migLabel   = "nvidia.com/mig.config"
	stateLabel = "nvidia.com/mig.config.state"
)

func main() {
	dir := flag.String("dir", "_output/demo", "directory for the control plane, configs and logs (recreated)")
	bin := flag.String("bin", "bin", "directory holding gpu-agent, gpu-scheduler, etcd and kube-apiserver")
	traces := flag.String("traces", "../shared/traces", "directory of the openb traces; the placement step is skipped without them")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *bin, *traces); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, bin, traces string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, d := range []string{"mig", "device-plugin", "device-plugins", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}

	step("Starting a real etcd and kube-apiserver (" + filepath.Join(dir, "cluster") + ")")
	cp, err := k8stest.Start(ctx, k8stest.Options{BinDir: bin, DataDir: filepath.Join(dir, "cluster")})
	if err != nil {
		return err
	}
	defer func() { _ = cp.Stop() }()
	client := cp.Client()
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: nodeName, Labels: map[string]string{"nvidia.com/gpu.present": "true"},
	}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", nodeName, err)
	}
	fmt.Printf("  node %s created; KUBECONFIG=%s\n", nodeName, cp.Kubeconfig)

	// The ConfigMaps the DaemonSet mounts, written out as the kubelet would.
	migFile := filepath.Join(dir, "mig", "config.yaml")
	if err := writeConfigMap("manifests/base/gpu-agent-mig-config.yaml", filepath.Join(dir, "mig")); err != nil {
		return err
	}
	if err := writeConfigMap("manifests/base/gpu-agent-config.yaml", filepath.Join(dir, "device-plugin")); err != nil {
		return err
	}

	step("Checking a MIG layout offline: gpu-agent layout check --config config.yaml --backend " + machine + " --name all-1g.10gb")
	check := exec.CommandContext(ctx, filepath.Join(bin, "gpu-agent"), "layout", "check",
		"--config", migFile, "--backend", machine, "--name", "all-1g.10gb")
	check.Stdout, check.Stderr = indent(os.Stdout), indent(os.Stderr)
	if err := check.Run(); err != nil {
		return fmt.Errorf("layout check: %w", err)
	}

	kubelet, stopKubelet, err := servePodResources(filepath.Join(dir, "pod-resources.sock"))
	if err != nil {
		return err
	}
	defer stopKubelet()

	addr, err := freeAddress()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "gpu-agent.log")
	step("Starting gpu-agent --backend=" + machine + " for node " + nodeName + " (log: " + logPath + ")")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agent := exec.CommandContext(agentCtx, filepath.Join(bin, "gpu-agent"),
		"--backend="+machine, "--node-name="+nodeName, "--kubeconfig="+cp.Kubeconfig,
		"--mig-config-file="+migFile, "--mig-journal="+filepath.Join(dir, "state", "mig-journal.json"),
		"--device-plugin-config-dir="+filepath.Join(dir, "device-plugin"), "--device-plugin-config-default=default",
		"--device-plugin-dir="+filepath.Join(dir, "device-plugins")+"/",
		"--pod-resources-socket="+filepath.Join(dir, "pod-resources.sock"), "--pod-resources-interval=1s",
		"--mig-drain-timeout=5s",
		"--metrics-address="+addr, "--collection-interval=1s")
	agent.Stdout, agent.Stderr = logFile, logFile
	agent.Cancel = func() error { return agent.Process.Signal(syscall.SIGTERM) }
	if err := agent.Start(); err != nil {
		return fmt.Errorf("starting gpu-agent: %w", err)
	}
	defer func() { stopAgent(); _ = agent.Wait() }()
	metricsURL := "http://" + addr + "/metrics"
	if err := waitFor(ctx, 60*time.Second, "gpu-agent's /metrics", func() (bool, error) {
		_, err := scrape(metricsURL)
		return err == nil, nil
	}); err != nil {
		return err
	}
	fmt.Println("  (no kubelet registers the device plugin here; a stand-in serves the PodResources API)")
	gpu7, err := uuidOf(metricsURL, "7")
	if err != nil {
		return err
	}
	step("A notebook pod holds GPU 7 (" + gpu7 + "): its series carry pod labels")
	kubelet.hold("ml", "notebook-0", "jupyter", "nvidia.com/gpu", gpu7)
	if err := waitFor(ctx, 30*time.Second, "pod labels in /metrics", func() (bool, error) {
		body, err := scrape(metricsURL)
		return err == nil && strings.Contains(body, `pod="notebook-0"`), nil
	}); err != nil {
		return err
	}
	if err := showMetrics(metricsURL); err != nil {
		return err
	}

	step("Relabeling while the pod runs (--mig-drain-policy=wait, --mig-drain-timeout=5s): kubectl label node " + nodeName + " " + migLabel + "=all-1g.10gb --overwrite")
	if err := relabel(ctx, client, "all-1g.10gb", "failed"); err != nil {
		return err
	}
	fmt.Println("  failed, not stuck in pending; every GPU kept its layout")
	if err := showEvent(ctx, client, "MIGConfigFailed", "all-1g.10gb"); err != nil {
		return err
	}

	step("The pod finishes; the operator asks again: kubectl label node " + nodeName + " " + migLabel + "=all-1g.10gb " + stateLabel + "- --overwrite")
	kubelet.hold("ml", "notebook-0", "jupyter", "nvidia.com/gpu")
	if err := relabel(ctx, client, "all-1g.10gb", "success"); err != nil {
		return err
	}
	if err := showEvent(ctx, client, "MIGConfigApplied", "all-1g.10gb"); err != nil {
		return err
	}
	// Profiling rates (GPM) need two collection passes over the new MIG devices.
	if err := waitFor(ctx, 30*time.Second, "per-MIG-device profiling series in /metrics", func() (bool, error) {
		body, err := scrape(metricsURL)
		return err == nil && migProf.MatchString(body), nil
	}); err != nil {
		return err
	}
	if err := showMetrics(metricsURL); err != nil {
		return err
	}

	step("A layout this hardware cannot take: " + migLabel + "=all-1g.5gb (an A100 40GB profile)")
	if err := relabel(ctx, client, "all-1g.5gb", "failed"); err != nil {
		return err
	}
	if err := showEvent(ctx, client, "MIGConfigFailed", "all-1g.5gb"); err != nil {
		return err
	}
	if err := showMetrics(metricsURL); err != nil {
		return err
	}

	nodes := filepath.Join(traces, "openb_node_list_gpu_node.csv")
	pods := filepath.Join(traces, "openb_pod_list_default.csv")
	if _, err := os.Stat(pods); err != nil {
		step("Placement: skipped (no traces at " + traces + "; pass -traces DIR)")
		return nil
	}
	step("Placement: replaying the openb 'default' trace (seed 42) under FGD and Tessera's scoring")
	sim := exec.CommandContext(ctx, filepath.Join(bin, "gpu-scheduler"), "simulate",
		"--nodes", nodes, "--pods", pods, "--policy", "fgd,tessera", "--seeds", "42", "--tune", "1.3",
		"--out", filepath.Join(dir, "placement"))
	sim.Stdout, sim.Stderr = indent(os.Stdout), indent(os.Stderr)
	if err := sim.Run(); err != nil {
		return fmt.Errorf("gpu-scheduler simulate: %w", err)
	}
	step("Done. Outputs in " + dir)
	return nil
}

var migProf = regexp.MustCompile(`DCGM_FI_PROF_PIPE_TENSOR_ACTIVE\{gpu="7",[^}]*GPU_I_PROFILE="1g\.10gb"`)

// relabel sets the MIG config label (dropping the state label, as a retry
// does) and prints every state the agent reports until it reports want.
func relabel(ctx context.Context, client kubernetes.Interface, config, want string) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q,%q:null}}}`, migLabel, config, stateLabel)
	start := time.Now()
	if _, err := client.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("labelling node %s: %w", nodeName, err)
	}
	w, err := client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", nodeName).String()})
	if err != nil {
		return fmt.Errorf("watching node %s: %w", nodeName, err)
	}
	defer w.Stop()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	last := ""
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch of node %s ended", nodeName)
			}
			n, ok := ev.Object.(*corev1.Node)
			if !ok || n.Labels[migLabel] != config {
				continue
			}
			state := n.Labels[stateLabel]
			if state != "" && state != last {
				last = state
				fmt.Printf("  %6.3fs  %s=%s\n", time.Since(start).Seconds(), stateLabel, state)
			}
			if state == want {
				return nil
			}
			if state == "success" || state == "failed" {
				return fmt.Errorf("node %s: %s=%s, want %s (see the agent log)", nodeName, stateLabel, state, want)
			}
		case <-timeout.C:
			return fmt.Errorf("node %s: no %s=%s after 2m (last %q)", nodeName, stateLabel, want, last)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// showEvent waits for the node's Event with reason whose message mentions
// config (Events are written asynchronously) and prints it.
func showEvent(ctx context.Context, client kubernetes.Interface, reason, config string) error {
	var found *corev1.Event
	err := waitFor(ctx, 30*time.Second, "a "+reason+" Event for "+config, func() (bool, error) {
		events, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", nodeName).String(),
		})
		if err != nil {
			return false, nil
		}
		for i, e := range events.Items {
			if e.Reason == reason && strings.Contains(e.Message, strconv.Quote(config)) {
				found = &events.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	msg := found.Message
	if len(msg) > 200 {
		msg = msg[:197] + "..."
	}
	fmt.Printf("  Event: %s %s: %s\n", found.Type, found.Reason, msg)
	return nil
}

// showMetrics prints a few dcgm-exporter series and Tessera's layout state.
func showMetrics(url string) error {
	body, err := scrape(url)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	var picked []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		counts[name]++
		switch {
		case name == "tessera_mig_layout_state" && strings.HasSuffix(line, " 1"),
			name == "DCGM_FI_DEV_GPU_TEMP" && (counts[name] == 1 || strings.Contains(line, "pod=")),
			name == "DCGM_FI_DEV_FB_USED" && strings.Contains(line, "GPU_I_PROFILE") && !strings.Contains(strings.Join(picked, ""), "GPU_I_PROFILE"):
			picked = append(picked, line)
		}
	}
	fmt.Printf("  /metrics: %d series; DCGM_FI_DEV_GPU_UTIL %d, DCGM_FI_DEV_FB_USED %d, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE %d\n",
		lines(body), counts["DCGM_FI_DEV_GPU_UTIL"], counts["DCGM_FI_DEV_FB_USED"], counts["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"])
	for _, l := range picked {
		fmt.Println("    " + l)
	}
	return nil
}

// uuidOf reads GPU index's UUID from its DCGM_FI_DEV_GPU_TEMP series.
func uuidOf(url, index string) (string, error) {
	body, err := scrape(url)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, `DCGM_FI_DEV_GPU_TEMP{gpu="`+index+`",`) {
			_, rest, ok := strings.Cut(l, `UUID="`)
			if ok {
				uuid, _, _ := strings.Cut(rest, `"`)
				return uuid, nil
			}
		}
	}
	return "", fmt.Errorf("no DCGM_FI_DEV_GPU_TEMP series of gpu %s in %s", index, url)
}

func lines(body string) int {
	n := 0
	for _, l := range strings.Split(body, "\n") {
		if l != "" && l[0] != '#' {
			n++
		}
	}
	return n
}

func scrape(url string) (string, error) {
	resp, err := http.Get(url) //nolint:noctx // a local, short-lived demo request
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}

func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// writeConfigMap writes each key of the ConfigMap in manifest into dir.
func writeConfigMap(manifest, dir string) error {
	data, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return fmt.Errorf("%s: %w", manifest, err)
	}
	if len(cm.Data) == 0 {
		return fmt.Errorf("%s: no data", manifest)
	}
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func freeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

// indent prefixes every line written to w with two spaces.
func indent(w io.Writer) io.Writer { return &prefixWriter{w: w} }

type prefixWriter struct {
	w       io.Writer
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if !p.midLine {
			if _, err := io.WriteString(p.w, "  "); err != nil {
				return 0, err
			}
		}
		if _, err := io.WriteString(p.w, line); err != nil {
			return 0, err
		}
		p.midLine = !strings.HasSuffix(line, "\n")
	}
	return len(b), nil
}
