// Command gpu-agent is Tessera's per-node DaemonSet. It turns flags into an
// agent.Config, opens the GPU backend and the Kubernetes client once, and
// runs pkg/agent, which holds the wiring and the policy; it holds no logic of
// its own beyond exit codes (2 for a bad command line).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/agent"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpuaudit"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	inventoryclient "github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
	"github.com/tessera-gpu/tessera/pkg/topology"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes: 0 success, 1 a failure while running, 2 a usage error (an
// unknown flag or command, a bad flag value), as flag.ExitOnError and the
// shell's builtins use 2.
const (
	exitFailure = 1
	exitUsage   = 2
)

// execute runs the command line args and returns the process's exit code,
// writing errors to stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand() //nolint:contextcheck // the command gets ctx through ExecuteContext
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "gpu-agent:", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsageError(err) {
		fmt.Fprintln(stderr, "Run 'gpu-agent --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// usageError is a bad command line: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// flagError makes a flag parsing error a usage error, with a suggestion
// for a mistyped flag name.
func flagError(cmd *cobra.Command, err error) error {
	if name, ok := strings.CutPrefix(err.Error(), "unknown flag: --"); ok {
		if s := suggestFlag(cmd, name); s != "" {
			err = fmt.Errorf("%w\n\nDid you mean this?\n\t--%s", err, s)
		}
	}
	return usageError{err}
}

// suggestFlag returns the flag of cmd closest to a mistyped name, as cobra
// suggests commands (Levenshtein distance of at most 2, or a prefix), or "".
func suggestFlag(cmd *cobra.Command, typed string) string {
	typed, _, _ = strings.Cut(typed, "=")
	best, bestDist := "", 3
	visit := func(f *pflag.Flag) {
		d := levenshtein(strings.ToLower(typed), f.Name)
		if strings.HasPrefix(f.Name, typed) && len(typed) >= 3 {
			d = min(d, 1)
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.PersistentFlags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

type options struct {
	backend string
	output  string
	gpmWait time.Duration

	nodeName       string
	kubeconfig     string
	pluginDir      string
	configDir      string
	configDefault  string
	sharePolicy    string
	healthXIDs     string
	healthRecovery string
	metricsAddress string
	debugAddress   string
	memoryLimit    string

	migConfigFile   string
	migConfig       string
	migJournal      string
	migDrainPolicy  string
	migDrainTimeout time.Duration
	migApplyTimeout time.Duration

	podResourcesSocket   string
	podResourcesInterval time.Duration
	collectionInterval   time.Duration

	podUsage                bool
	gpuAudit                bool
	gpuAuditTrusted         []string
	gpuAuditRingBufferBytes int

	publishInventory     bool
	gfdLabels            bool
	schedulerPlans       bool
	inventoryHeartbeat   time.Duration
	lostGPUProbeInterval time.Duration
	shutdownTimeout      time.Duration
}

func newRootCommand() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:           "gpu-agent",
		Short:         "Tessera's GPU node agent: advertises GPUs, MIG devices and shares to the kubelet and keeps their health",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), o)
		},
	}
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().StringVar(&o.backend, "backend", "auto", backend.Usage())
	f := root.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name, for its device-plugin config label and Events (default $NODE_NAME)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster config, or runs standalone (no label watch) outside a cluster")
	f.StringVar(&o.pluginDir, "device-plugin-dir", "/var/lib/kubelet/device-plugins/", "the kubelet's device-plugin directory")
	f.StringVar(&o.configDir, "device-plugin-config-dir", "", "directory of named device-plugin configs (a mounted ConfigMap), chosen by the node label "+config.NodeLabel)
	f.StringVar(&o.configDefault, "device-plugin-config-default", "", "config used while the node has no "+config.NodeLabel+" label")
	f.StringVar(&o.sharePolicy, "share-policy", "packed", "which GPU serves a time-sliced request: packed or distributed")
	f.StringVar(&o.healthXIDs, "health-xid-policy", "", `XID policy: "ignore=default,63;critical=all" style clauses (default: application XIDs 13,31,43,45,68,94,109 ignored, the rest fatal)`)
	f.StringVar(&o.metricsAddress, "metrics-address", ":9400", "address of the Prometheus /metrics endpoint; empty disables it")
	f.StringVar(&o.debugAddress, "debug-address", "",
		"address of a net/http/pprof endpoint (/debug/pprof/) for profiling the agent; empty (the default) disables it. Keep it on localhost: it is unauthenticated")
	f.StringVar(&o.memoryLimit, "memory-limit", "0",
		"soft memory limit of the Go runtime (runtime/debug.SetMemoryLimit), such as 48Mi; 0 sets none (GOMEMLIMIT still applies). "+
			"Set it above the agent's live heap: near it the garbage collector runs continuously")
	f.StringVar(&o.healthRecovery, "health-recovery-period", "5m", "a GPU with no new fatal event for this long is healthy again")
	f.StringVar(&o.migConfigFile, "mig-config-file", "",
		"mig-parted config file (a mounted ConfigMap key) whose named layouts the node label "+reconcile.MIGConfigLabel+" selects; empty leaves MIG alone")
	f.StringVar(&o.migConfig, "mig-config", "",
		"standalone only (no Kubernetes API): the layout of --mig-config-file to apply at start; in a cluster the node label chooses")
	f.StringVar(&o.migJournal, "mig-journal", "",
		"file recording a layout change in progress, so that an agent restarted mid-change rolls it back (keep it on a hostPath)")
	f.StringVar(&o.migDrainPolicy, "mig-drain-policy", string(reconcile.DrainWait),
		"what happens to pods holding a GPU whose layout changes: wait (for them to finish) or evict (through the Eviction API, honouring PodDisruptionBudgets)")
	f.DurationVar(&o.migDrainTimeout, "mig-drain-timeout", 5*time.Minute,
		"how long a layout change waits for pods to leave the GPUs it changes before it fails")
	f.DurationVar(&o.migApplyTimeout, "mig-apply-timeout", 5*time.Minute,
		"how long applying a layout may take before it is rolled back and fails")
	f.DurationVar(&o.collectionInterval, "collection-interval", telemetry.DefaultInterval,
		"how often GPU telemetry is collected into the snapshot /metrics serves")
	f.StringVar(&o.podResourcesSocket, "pod-resources-socket", podresources.DefaultSocket,
		"the kubelet's PodResources API socket, for the pod, namespace and container labels (metrics flow without them if it is unreachable)")
	f.DurationVar(&o.podResourcesInterval, "pod-resources-interval", podresources.DefaultInterval,
		"how often the cached view of which pod holds which device is refreshed")
	f.BoolVar(&o.podUsage, "pod-usage", true,
		"export per-pod GPU usage (tessera_pod_gpu_utilization_ratio, tessera_pod_gpu_memory_used_bytes) from the GPU processes' cgroups; in a pod it needs hostPID")
	f.BoolVar(&o.gpuAudit, "gpu-audit", false,
		"audit opens of NVIDIA devices with eBPF and flag pods that open GPUs the kubelet did not allocate them (needs privileges and the host's cgroup and tracefs mounts: see docs/gpu-audit.md)")
	f.StringSliceVar(&o.gpuAuditTrusted, "gpu-audit-trusted-namespaces", []string{"tessera-system"},
		"namespaces whose pods may open any NVIDIA device (the agent's own, DCGM's, the GPU operator's)")
	f.IntVar(&o.gpuAuditRingBufferBytes, "gpu-audit-ring-buffer-bytes", 256<<10,
		"size of the audit's kernel-to-agent ring buffer: a power of two of at least 4096; opens that do not fit are counted as lost")
	f.BoolVar(&o.publishInventory, "publish-inventory", true,
		"keep the node's GPUNode (gpu.tessera.dev/v1alpha1) equal to what the agent observes; the gpu-scheduler reads it")
	f.BoolVar(&o.gfdLabels, "gfd-labels", true,
		"keep GPU Feature Discovery's node labels (nvidia.com/gpu.product, gpu.memory, mig-<profile>.count, ...); turn off where NVIDIA's GFD runs")
	f.BoolVar(&o.schedulerPlans, "scheduler-plans", true,
		"answer the kubelet's preferred allocation with the devices gpu-scheduler planned for the pod being admitted (annotation gpu.tessera.dev/devices) when that pod can be told; lists the node's pods at each admission")
	f.DurationVar(&o.inventoryHeartbeat, "inventory-heartbeat", inventory.DefaultHeartbeatInterval,
		"how often an unchanged GPUNode is confirmed; keep the scheduler's staleAfter well above it")
	f.DurationVar(&o.lostGPUProbeInterval, "lost-gpu-probe-interval", deviceplugin.DefaultProbeInterval,
		"how often a GPU that fell off the bus is probed for a reset (only while one is lost); it is advertised healthy again once it answers")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", agent.DefaultShutdownTimeout,
		"how long the agent may take to shut down after SIGTERM; keep it below the pod's terminationGracePeriodSeconds")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlagSet(klogFlags)

	discover := &cobra.Command{
		Use:   "discover",
		Short: "Print the GPUs, MIG devices and topology the backend sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDiscover(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	discover.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")

	sample := &cobra.Command{
		Use:   "sample",
		Short: "Print one telemetry snapshot as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSample(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	sample.Flags().DurationVar(&o.gpmWait, "gpm-interval", time.Second,
		"time between the two passes that GPM profiling rates need (0 takes one pass and omits them)")
	root.AddCommand(discover, sample, newLayoutCommand(o))
	return root
}

func open(ctx context.Context, o *options) (*backend.Opened, error) {
	if o.output != "" && o.output != "table" && o.output != "json" {
		return nil, usageError{fmt.Errorf("invalid --output %q: want table or json", o.output)}
	}
	return backend.Open(ctx, o.backend)
}

// openDiscovered opens the backend and discovers the machine; the caller
// closes the backend.
func openDiscovered(ctx context.Context, o *options) (*backend.Opened, *gpu.Machine, error) {
	b, err := open(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	m, err := b.Discover(ctx)
	if err != nil {
		closeBackend(ctx, b)
		return nil, nil, fmt.Errorf("discovering gpus: %w", err)
	}
	return b, m, nil
}

func runDiscover(ctx context.Context, o *options, w io.Writer) error {
	b, m, err := openDiscovered(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	if o.output == "json" {
		return writeJSON(w, m)
	}
	return gpu.WriteMachineTable(w, m)
}

func runSample(ctx context.Context, o *options, w io.Writer) error {
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	snap, err := b.Sample(ctx)
	if err == nil && o.gpmWait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.gpmWait):
		}
		snap, err = b.Sample(ctx)
	}
	if err != nil {
		return fmt.Errorf("sampling gpu telemetry: %w", err)
	}
	return writeJSON(w, snapshotView(snap))
}

// snapshotView renders per-device errors as text for JSON output.
func snapshotView(s *gpu.Snapshot) any {
	type dev struct {
		gpu.DeviceTelemetry
		Error string `json:"error,omitempty"`
	}
	out := struct {
		Time    time.Time
		Devices []dev
	}{Time: s.Time}
	for _, d := range s.Devices {
		v := dev{DeviceTelemetry: d}
		if d.Err != nil {
			v.Error = d.Err.Error()
		}
		out.Devices = append(out.Devices, v)
	}
	return out
}

// agentConfig turns the flags into the agent's Config; a bad value is a
// usage error naming the flag and the allowed values. It opens nothing.
func agentConfig(ctx context.Context, o *options) (agent.Config, error) {
	cfg := agent.Config{
		NodeName:                  o.nodeName,
		PluginDir:                 o.pluginDir,
		DevicePluginConfigDir:     o.configDir,
		DevicePluginConfigDefault: o.configDefault,
		LostGPUProbeInterval:      o.lostGPUProbeInterval,
		MIGConfigFile:             o.migConfigFile,
		StandaloneMIGConfig:       o.migConfig,
		MIGJournal:                o.migJournal,
		MIGDrainTimeout:           o.migDrainTimeout,
		MIGApplyTimeout:           o.migApplyTimeout,
		CollectionInterval:        o.collectionInterval,
		PodResourcesSocket:        o.podResourcesSocket,
		PodResourcesInterval:      o.podResourcesInterval,
		MetricsAddress:            o.metricsAddress,
		DebugAddress:              o.debugAddress,
		ShutdownTimeout:           o.shutdownTimeout,
		DisableGFDLabels:          !o.gfdLabels,
		IgnoreSchedulerPlans:      !o.schedulerPlans,
		PodUsage:                  o.podUsage,
		InventoryHeartbeat:        o.inventoryHeartbeat,
	}
	var errs []error
	if err := backend.CheckSpec(o.backend); err != nil {
		errs = append(errs, fmt.Errorf("invalid --backend: %w", err))
	}
	var err error
	if cfg.HealthPolicy, err = health.ParsePolicy(o.healthXIDs, o.healthRecovery); err != nil {
		errs = append(errs, fmt.Errorf("invalid --health-xid-policy/--health-recovery-period: %w", err))
	}
	share, err := topology.ParseSharePolicy(o.sharePolicy)
	if err != nil {
		errs = append(errs, fmt.Errorf("invalid --share-policy: %w", err))
	}
	cfg.SharePolicy = deviceplugin.SharePolicy(share)
	if cfg.MIGDrain, err = reconcile.ParseDrainPolicy(o.migDrainPolicy); err != nil {
		errs = append(errs, fmt.Errorf("invalid --mig-drain-policy: %w", err))
	}
	if _, _, err := gcSettings("", o.memoryLimit); err != nil {
		errs = append(errs, err)
	}
	durations := []struct {
		flag string
		d    time.Duration
	}{
		{"--collection-interval", o.collectionInterval}, {"--pod-resources-interval", o.podResourcesInterval},
		{"--mig-drain-timeout", o.migDrainTimeout}, {"--mig-apply-timeout", o.migApplyTimeout},
		{"--lost-gpu-probe-interval", o.lostGPUProbeInterval}, {"--shutdown-timeout", o.shutdownTimeout},
		{"--inventory-heartbeat", o.inventoryHeartbeat},
	}
	for _, d := range durations {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("invalid %s=%s: want a duration > 0, such as 30s", d.flag, d.d))
		}
	}
	if o.gpuAudit {
		rb := o.gpuAuditRingBufferBytes
		if rb < 4096 || rb&(rb-1) != 0 {
			errs = append(errs, fmt.Errorf("invalid --gpu-audit-ring-buffer-bytes=%d: want a power of two of at least 4096, such as 262144", rb))
		}
		majors, err := gpuaudit.ReadMajors("/proc/devices")
		if err != nil {
			// Without the driver loaded the NVIDIA major is still 195; the
			// audit reports what it cannot watch.
			klog.FromContext(ctx).Info("Reading device majors for the GPU audit; watching NVIDIA's fixed major only", "err", err.Error())
		}
		cfg.GPUAudit = &gpuaudit.Config{Majors: majors, TrustedNamespaces: o.gpuAuditTrusted,
			RingBufferBytes: rb, MountTracefs: true, MountCgroup2: true}
	}
	if o.migConfig != "" && o.migConfigFile == "" {
		errs = append(errs, fmt.Errorf("--mig-config=%s needs --mig-config-file", o.migConfig))
	}
	if len(errs) > 0 {
		return agent.Config{}, usageError{errors.Join(errs...)}
	}
	return cfg, nil
}

func runAgent(ctx context.Context, o *options) error {
	cfg, err := agentConfig(ctx, o)
	if err != nil {
		return err
	}
	client, restCfg, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	if client != nil {
		cfg.Client = client
		if o.publishInventory {
			gpuNodes, err := inventoryclient.NewForConfig(restCfg)
			if err != nil {
				return fmt.Errorf("creating the gpunode client: %w", err)
			}
			cfg.GPUNodes = gpuNodes
			cfg.MachineType = inventory.ReadMachineType(inventory.DefaultMachineTypeFile)
		}
		if o.nodeName == "" {
			return usageError{errors.New("--node-name (or $NODE_NAME) is required when running in a cluster")}
		}
		if o.migConfig != "" {
			return usageError{fmt.Errorf("--mig-config=%s is for standalone runs; in a cluster label the node: kubectl label node %s %s=%s --overwrite",
				o.migConfig, o.nodeName, reconcile.MIGConfigLabel, o.migConfig)}
		}
	}
	if err := applyRuntimePolicy(os.Getenv("GOGC"), o.memoryLimit, o.debugAddress); err != nil {
		return usageError{err}
	}
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	cfg.Backend = b
	if b.Sim != nil {
		cfg.Cgroups = b.Sim // the simulated machine's processes live in its own cgroups
	}
	return agent.Run(ctx, cfg)
}

// kubeClient returns a client from --kubeconfig or the in-cluster config, or
// nil outside a cluster with no kubeconfig.
func kubeClient(kubeconfig string) (*kube.Client, *rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
	default:
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loading kubernetes client config: %w", err)
	}
	c, err := kube.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	return c, cfg, nil
}

func closeBackend(ctx context.Context, b gpu.Backend) {
	if err := b.Close(); err != nil {
		klog.FromContext(ctx).Error(err, "Closing gpu backend")
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isCobraUsageError recognises the usage errors cobra returns as plain
// errors: an unknown command or argument, a missing required flag.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command ") || strings.HasPrefix(msg, "required flag(s) ") ||
		strings.Contains(msg, " accepts ") && strings.Contains(msg, " arg(s), received ")
}
