package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/test/e2e/kubelet"
)

// Options configures Start.
type Options struct {
	// Dir receives the control plane's data, the generated configs and every
	// log; it is emptied first. Required.
	Dir string
	// BinDir holds gpu-agent and gpu-scheduler. Required.
	BinDir string
	// K8sBinDir holds etcd and kube-apiserver; default BinDir.
	K8sBinDir string
	// RepoDir is the repository root, for the shipped manifests (the GPUNode
	// CRD, the agent's ConfigMaps, the scheduler's config). Default: the
	// nearest directory above the working directory holding go.mod.
	RepoDir string
	// Nodes is the fleet; default Fleet().
	Nodes []NodeSpec
	// Progress receives one line per step; nil drops them.
	Progress func(format string, args ...any)
}

// Cluster is a running local cluster.
type Cluster struct {
	// Dir and Kubeconfig are where everything lives and the admin kubeconfig.
	Dir, Kubeconfig string
	// SchedulerMetricsURL is the scheduler's /metrics (HTTPS, self-signed,
	// no credentials needed).
	SchedulerMetricsURL string
	Nodes               []*Node

	opts      Options
	cp        *k8stest.ControlPlane
	client    kubernetes.Interface
	gpunodes  *client.Client
	scheduler *process
	sockets   string
	progress  func(string, ...any)
}

// Node is one simulated node with its stand-in and agent.
type Node struct {
	Spec NodeSpec
	// MetricsURL is the agent's /metrics.
	MetricsURL string
	// Dir holds the node's machine description and logs.
	Dir     string
	standin *kubelet.Process
	agent   *process
}

// Start brings the cluster up: control plane, the fleet (a kubelet stand-in
// and a gpu-agent per node), the scheduler; it returns once every agent has
// published its GPUNode and the kubelets advertise its devices. On error
// everything started is stopped, and the Cluster returned (nil when nothing
// was started) still answers Leftovers; Stop may be called again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Dir == "" || opts.BinDir == "" {
		return nil, errors.New("cluster options: Dir and BinDir are required")
	}
	if opts.K8sBinDir == "" {
		opts.K8sBinDir = opts.BinDir
	}
	if opts.Nodes == nil {
		opts.Nodes = Fleet()
	}
	if opts.RepoDir == "" {
		if opts.RepoDir, err = moduleRoot(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{opts: opts, progress: opts.Progress}
	if c.progress == nil {
		c.progress = func(string, ...any) {}
	}
	if c.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return nil, fmt.Errorf("emptying %s: %w", c.Dir, err)
	}
	for _, d := range []string{"mig", "device-plugin", "nodes"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// Unix socket paths are limited to 108 bytes: the kubelet and plugin
	// sockets live under a short directory of their own.
	if c.sockets, err = os.MkdirTemp("", "tessera-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (while: %w)", ctx.Err(), err)
			}
		}
	}()

	start := time.Now()
	c.progress("Starting etcd and kube-apiserver on 127.0.0.1 (real binaries, %s)", filepath.Join(c.Dir, "control-plane"))
	// The control plane outlives ctx when the caller keeps the cluster up;
	// Stop ends it.
	if c.cp, err = k8stest.Start(context.WithoutCancel(ctx), k8stest.Options{BinDir: opts.K8sBinDir, DataDir: filepath.Join(c.Dir, "control-plane")}); err != nil {
		return c, err
	}
	c.Kubeconfig, c.client = c.cp.Kubeconfig, c.cp.Client()
	if c.gpunodes, err = client.NewForConfig(c.cp.RESTConfig()); err != nil {
		return c, err
	}
	if err := c.prepareAPI(ctx); err != nil {
		return c, err
	}
	if err := c.writeConfigs(); err != nil {
		return c, err
	}

	c.progress("Starting %d kubelet stand-ins (the kubelet's device manager, each in its own user+mount namespace)", len(opts.Nodes))
	for _, spec := range opts.Nodes {
		n := &Node{Spec: spec, Dir: filepath.Join(c.Dir, "nodes", spec.Name)}
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return c, err
		}
		varLib := filepath.Join(c.sockets, spec.Name)
		cfg := kubelet.Config{NodeName: spec.Name, Kubeconfig: c.Kubeconfig, VarLib: varLib,
			PodResourcesSocket: filepath.Join(varLib, "pod-resources.sock"), Labels: spec.Labels, CPU: spec.CPU, Memory: spec.Memory}
		if n.standin, err = kubelet.Start(cfg, filepath.Join(n.Dir, "kubelet.log")); err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.poll(ctx, 60*time.Second, "every node registered", func() (bool, error) {
		for _, n := range c.Nodes {
			if _, err := c.client.CoreV1().Nodes().Get(ctx, n.Spec.Name, metav1.GetOptions{}); err != nil {
				return false, n.exited()
			}
		}
		return true, nil
	}); err != nil {
		return c, err
	}

	c.progress("Starting %d gpu-agents (--backend=sim:<node>/machine.yaml: simulated NVML, real agent)", len(opts.Nodes))
	for _, n := range c.Nodes {
		if err := c.startAgent(n); err != nil {
			return c, err
		}
	}
	if err := c.startScheduler(); err != nil {
		return c, err
	}
	c.progress("Waiting for the GPUNodes, GFD labels, device-plugin resources and the %s layout", LayoutMixed)
	if err := c.poll(ctx, 90*time.Second, "the fleet to be ready", func() (bool, error) {
		for _, n := range c.Nodes {
			if err := n.exited(); err != nil {
				return false, err
			}
			ok, err := c.nodeReady(ctx, n)
			if err != nil || !ok {
				return false, err
			}
		}
		_, err := scrape(c.SchedulerMetricsURL)
		return err == nil, c.scheduler.exited()
	}); err != nil {
		return c, err
	}
	c.progress("Cluster up in %.1fs: KUBECONFIG=%s", time.Since(start).Seconds(), c.Kubeconfig)
	return c, nil
}

// prepareAPI installs the GPUNode CRD and the namespaces of the workloads.
func (c *Cluster) prepareAPI(ctx context.Context) error {
	if err := inventorytest.InstallCRD(ctx, c.cp.RESTConfig()); err != nil {
		return err
	}
	for _, ns := range []string{"training", "serving", "notebooks"} {
		_, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	return nil
}

// writeConfigs writes the agent's ConfigMaps as a kubelet mounts them (the
// shipped ones plus the demo's layouts and sharing config) and each node's
// machine description.
func (c *Cluster) writeConfigs() error {
	mig, err := c.configMap("manifests/base/gpu-agent-mig-config.yaml")
	if err != nil {
		return err
	}
	migYAML, ok := mig["config.yaml"]
	if !ok {
		return errors.New("manifests/base/gpu-agent-mig-config.yaml: no config.yaml key")
	}
	if err := os.WriteFile(c.migConfig(), []byte(strings.TrimRight(migYAML, "\n")+"\n"+demoMIGLayouts), 0o644); err != nil {
		return err
	}
	dp, err := c.configMap("manifests/base/gpu-agent-config.yaml")
	if err != nil {
		return err
	}
	dp[SharedConfig] = demoSharedConfig
	for k, v := range dp {
		if err := os.WriteFile(filepath.Join(c.Dir, "device-plugin", k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) migConfig() string { return filepath.Join(c.Dir, "mig", "config.yaml") }

func (c *Cluster) configMap(rel string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(c.opts.RepoDir, rel))
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	return cm.Data, nil
}

func (c *Cluster) startAgent(n *Node) error {
	machine := filepath.Join(n.Dir, "machine.yaml")
	if err := c.writeMachine(n.Spec, machine); err != nil {
		return err
	}
	addr, err := freeAddress()
	if err != nil {
		return err
	}
	n.MetricsURL = "http://" + addr + "/metrics"
	cfg := n.standin.Config
	n.agent, err = startProcess(filepath.Join(c.opts.BinDir, "gpu-agent"), filepath.Join(n.Dir, "gpu-agent.log"),
		"--backend=sim:"+machine, "--node-name="+n.Spec.Name, "--kubeconfig="+c.Kubeconfig,
		"--device-plugin-dir="+cfg.PluginDir(),
		"--device-plugin-config-dir="+filepath.Join(c.Dir, "device-plugin"), "--device-plugin-config-default=default",
		"--mig-config-file="+c.migConfig(), "--mig-journal="+filepath.Join(n.Dir, "mig-journal.json"),
		"--mig-drain-timeout=30s",
		"--pod-resources-socket="+cfg.PodResourcesSocket, "--pod-resources-interval=500ms",
		"--metrics-address="+addr, "--collection-interval=1s")
	return err
}

var nameLine = regexp.MustCompile(`(?m)^name: .*$`)

// writeMachine copies spec's built-in machine description under the node's name.
func (c *Cluster) writeMachine(spec NodeSpec, path string) error {
	return WriteMachine(c.opts.RepoDir, spec.Machine, spec.Name, path)
}

// WriteMachine writes built-in simulated machine machine (pkg/gpu/sim/machines
// under repoDir) to path renamed node: the name seeds the GPU UUIDs, so that
// no two nodes share one. Open it with backend "sim:"+path.
func WriteMachine(repoDir, machine, node, path string) error {
	rel := filepath.Join("pkg/gpu/sim/machines", machine+".yaml")
	data, err := os.ReadFile(filepath.Join(repoDir, rel))
	if err != nil {
		return fmt.Errorf("node %s: machine %q: %w", node, machine, err)
	}
	if !nameLine.Match(data) {
		return fmt.Errorf("%s: no name line", rel)
	}
	out := nameLine.ReplaceAll(data, []byte("name: "+node+" # "+machine+", renamed by test/e2e/cluster"))
	return os.WriteFile(path, out, 0o644)
}

func (c *Cluster) startScheduler() error {
	// The shipped second-scheduler profile, run as one replica.
	data, err := os.ReadFile(filepath.Join(c.opts.RepoDir, "manifests/scheduler/second-scheduler.yaml"))
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("manifests/scheduler/second-scheduler.yaml: %w", err)
	}
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	cfg["clientConnection"] = map[string]any{"kubeconfig": c.Kubeconfig, "qps": 200, "burst": 400}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	path := filepath.Join(c.Dir, "gpu-scheduler.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return err
	}
	addr, err := freeAddress()
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	c.SchedulerMetricsURL = "https://" + addr + "/metrics"
	c.progress("Starting gpu-scheduler (kube-scheduler 1.36 + TesseraGPU, the shipped second-scheduler profile)")
	c.scheduler, err = startProcess(filepath.Join(c.opts.BinDir, "gpu-scheduler"), filepath.Join(c.Dir, "gpu-scheduler.log"),
		"--config="+path, "--bind-address="+host, "--secure-port="+port,
		"--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "-v=2")
	return err
}

// nodeReady is true once n's GPUNode lists its GPUs, the kubelet's node
// status advertises every resource the GPUNode does and a requested MIG
// layout is applied.
func (c *Cluster) nodeReady(ctx context.Context, n *Node) (bool, error) {
	gn, err := c.gpunodes.Get(ctx, n.Spec.Name)
	if err != nil || len(gn.Status.GPUs) == 0 {
		return false, nil //nolint:nilerr // not published yet
	}
	node, err := c.client.CoreV1().Nodes().Get(ctx, n.Spec.Name, metav1.GetOptions{})
	if err != nil {
		return false, nil //nolint:nilerr // retried
	}
	if want := n.Spec.Labels[LabelMIGConfig]; want != "" {
		switch node.Labels[LabelMIGState] {
		case "success":
		case "failed":
			return false, fmt.Errorf("node %s: MIG layout %s failed (see %s)", n.Spec.Name, want, filepath.Join(n.Dir, "gpu-agent.log"))
		default:
			return false, nil
		}
	}
	for res, count := range Advertised(gn) {
		q := node.Status.Allocatable[corev1.ResourceName(res)]
		if q.Value() != int64(count) {
			return false, nil
		}
	}
	return node.Labels[LabelProduct] != "", nil
}

func (c *Cluster) poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, err
	})
	if err != nil {
		if last != nil && !errors.Is(err, last) {
			return fmt.Errorf("waiting for %s: %w (last: %w)", what, err, last)
		}
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// Stop ends every process (scheduler, agents, stand-ins, then the control
// plane) and removes the socket directory; the logs stay in Dir.
func (c *Cluster) Stop() error {
	var errs []error
	if c.scheduler != nil {
		errs = append(errs, c.scheduler.stop())
	}
	for _, n := range c.Nodes {
		if n.agent != nil {
			errs = append(errs, n.agent.stop())
		}
	}
	for _, n := range c.Nodes {
		if n.standin != nil {
			errs = append(errs, n.standin.Stop())
		}
	}
	if c.cp != nil {
		errs = append(errs, c.cp.Stop())
	}
	if c.sockets != "" {
		errs = append(errs, os.RemoveAll(c.sockets))
	}
	return errors.Join(errs...)
}

// Pids are the processes of the cluster this process started (the control
// plane's excepted: k8stest owns those).
func (c *Cluster) Pids() []int {
	var out []int
	if c.scheduler != nil {
		out = append(out, c.scheduler.pid())
	}
	for _, n := range c.Nodes {
		if n.agent != nil {
			out = append(out, n.agent.pid())
		}
		if n.standin != nil {
			out = append(out, n.standin.Pid())
		}
	}
	return out
}

func (n *Node) exited() error {
	select {
	case <-n.standin.Done():
		return fmt.Errorf("the kubelet stand-in of %s exited (see %s)", n.Spec.Name, filepath.Join(n.Dir, "kubelet.log"))
	default:
	}
	if n.agent != nil {
		return n.agent.exited()
	}
	return nil
}

var insecure = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the scheduler's self-signed serving cert on 127.0.0.1
}}

func scrape(url string) (string, error) {
	resp, err := insecure.Get(url) //nolint:noctx // short local requests with a client timeout
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

func freeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: set Options.RepoDir")
		}
		dir = parent
	}
}
