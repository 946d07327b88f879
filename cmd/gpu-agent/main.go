// Command gpu-agent is Tessera's per-node DaemonSet. This composition root
// parses flags, opens one GPU backend and wires packages together; it holds no
// logic of its own.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
	"github.com/tessera-gpu/tessera/pkg/topology"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-agent:", err)
		os.Exit(1)
	}
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
		return nil, fmt.Errorf("invalid --output %q: want table or json", o.output)
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

func runAgent(ctx context.Context, o *options) error {
	logger := klog.FromContext(ctx)
	if err := applyRuntimePolicy(os.Getenv("GOGC"), o.memoryLimit, o.debugAddress); err != nil {
		return err
	}
	policy, err := health.ParsePolicy(o.healthXIDs, o.healthRecovery)
	if err != nil {
		return fmt.Errorf("invalid --health-xid-policy/--health-recovery-period: %w", err)
	}
	share, err := topology.ParseSharePolicy(o.sharePolicy)
	if err != nil {
		return fmt.Errorf("invalid --share-policy: %w", err)
	}
	drain, err := reconcile.ParseDrainPolicy(o.migDrainPolicy)
	if err != nil {
		return fmt.Errorf("invalid --mig-drain-policy: %w", err)
	}
	if o.migConfig != "" && o.migConfigFile == "" {
		return fmt.Errorf("--mig-config=%s needs --mig-config-file", o.migConfig)
	}
	client, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	if client != nil && o.migConfig != "" {
		return fmt.Errorf("--mig-config=%s is for standalone runs; in a cluster label the node: kubectl label node %s %s=%s --overwrite",
			o.migConfig, o.nodeName, reconcile.MIGConfigLabel, o.migConfig)
	}
	b, m, err := openDiscovered(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	applier := mig.NewApplier(b, o.migJournal)
	if o.migConfig != "" {
		if m, err = applyStandaloneLayout(ctx, applier, o.migConfigFile, o.migConfig, m); err != nil {
			return err
		}
	}
	if len(m.Devices) == 0 {
		logger.Info("Advertising no GPUs", "backend", m.Backend, "reason", noGPUReason(m))
	}
	for _, d := range m.Devices {
		logger.Info("Found GPU", "gpu", d.Index, "uuid", d.UUID, "product", d.Product, "memoryMiB", d.MemoryMiB,
			"migEnabled", d.MIGEnabled, "migDevices", len(d.MIGDevices))
	}
	for _, f := range m.Failed {
		logger.Error(f.Err, "GPU cannot be read; not advertising it", "gpu", f.Index, "uuid", f.UUID)
	}

	clk := clock.RealClock{}
	tracker := health.NewTracker(policy, clk, deviceplugin.TrackedGPUs(m))
	mgr := deviceplugin.NewManager(deviceplugin.Config{PluginDir: o.pluginDir}, tracker)
	cfgr := deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: o.configDir, Default: o.configDefault,
		SharePolicy: deviceplugin.SharePolicy(share)}, mgr, m)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := deviceplugin.NewMetrics(reg, mgr)
	if err != nil {
		return fmt.Errorf("registering device plugin metrics: %w", err)
	}
	cfgr.SetMetrics(metrics)

	pods := podresources.New(podresources.Options{Socket: o.podResourcesSocket, Interval: o.podResourcesInterval, Clock: clk})
	if err := pods.Register(reg); err != nil {
		return fmt.Errorf("registering pod resources metrics: %w", err)
	}
	topts := telemetry.Options{
		Backend:  b,
		Machine:  m,
		Pods:     pods,
		Health:   tracker,
		NodeName: o.nodeName,
		Interval: o.collectionInterval,
		Clock:    clk,
		FatalXID: tracker.Policy().IsFatalXID,
	}
	if client != nil {
		recorder, stopEvents := deviceplugin.NewEventRecorder(ctx, client, o.nodeName)
		defer stopEvents()
		topts.Recorder = recorder
	}
	exporter, err := telemetry.New(topts)
	if err != nil {
		return fmt.Errorf("creating the telemetry exporter: %w", err)
	}

	label := ""
	if client != nil {
		if o.nodeName == "" {
			return errors.New("--node-name (or $NODE_NAME) is required when running in a cluster")
		}
		node, err := client.GetNode(ctx, o.nodeName)
		if err != nil {
			return fmt.Errorf("reading node %s: %w", o.nodeName, err)
		}
		label = node.Labels[config.NodeLabel]
	} else {
		logger.Info("No Kubernetes API configured; running standalone with the default device-plugin config")
	}
	// A bad config at start refuses to start: nothing would be advertised correctly.
	name, err := cfgr.Apply(ctx, label)
	if err != nil {
		return fmt.Errorf("applying the device plugin config: %w", err)
	}
	logger.Info("Device plugin config applied", "config", name)

	var layouts *reconcile.Reconciler
	if client != nil {
		rcfg := reconcile.Config{
			NodeName: o.nodeName, Client: client, Machine: m, Discoverer: b,
			Pods: pods, Sharing: cfgr, Devices: mgr, Health: tracker, SharingDir: o.configDir,
			Drain: drain, DrainTimeout: o.migDrainTimeout, ApplyTimeout: o.migApplyTimeout,
			OnMachine: exporter.SetMachine,
		}
		if o.migConfigFile != "" {
			rcfg.Layouts = reconcile.MIGLayouts{File: o.migConfigFile, Applier: applier}
		}
		if rcfg.Metrics, err = reconcile.NewMetrics(reg); err != nil {
			return fmt.Errorf("registering layout metrics: %w", err)
		}
		if layouts, err = reconcile.New(rcfg); err != nil {
			return err
		}
		// Before anything is advertised: never serve half a layout an
		// agent stopped in the middle of.
		if err := layouts.Recover(ctx); err != nil {
			logger.Error(err, "Recovering an interrupted MIG layout change; the label reconcile will replan")
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Run(ctx) })
	g.Go(func() error {
		events := gpu.TeeEvents(b, exporter.ObserveEvent)
		return deviceplugin.HealthLoop{Events: events, Tracker: tracker, Manager: mgr, Clock: clk}.Run(ctx)
	})
	g.Go(func() error { return pods.Run(ctx) })
	g.Go(func() error { return exporter.Run(ctx) })
	if layouts != nil {
		g.Go(func() error { return layouts.Run(ctx) })
	}
	if o.metricsAddress != "" {
		g.Go(func() error {
			mux := http.NewServeMux()
			mux.Handle("/metrics", exporter.Handler(reg))
			return serve(ctx, "metrics", o.metricsAddress, mux)
		})
	}
	if o.debugAddress != "" {
		g.Go(func() error { return serve(ctx, "pprof", o.debugAddress, pprofMux()) })
	}
	err = g.Wait()
	logger.Info("Shutting down")
	return err
}

// applyStandaloneLayout applies layout name of file at start when no node
// label can choose one, and returns the machine as it is afterwards.
func applyStandaloneLayout(ctx context.Context, applier *mig.Applier, file, name string, m *gpu.Machine) (*gpu.Machine, error) {
	if _, err := applier.Recover(ctx); err != nil {
		return nil, fmt.Errorf("recovering an interrupted MIG layout change: %w", err)
	}
	f, err := mig.Load(file)
	if err != nil {
		return nil, err
	}
	plan, err := mig.NewPlan(f, name, m)
	if err != nil {
		return nil, err
	}
	if plan.Empty() {
		klog.FromContext(ctx).Info("MIG layout already in place", "config", name)
		return m, nil
	}
	out, err := applier.Apply(ctx, plan)
	if err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("MIG layout applied", "config", name, "plan", plan.Summary())
	return out, nil
}

// pprofMux serves net/http/pprof's handlers on their own mux, so that they
// are reachable only on --debug-address, never next to /metrics.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serve serves handler on addr until ctx is done; what names it in logs and errors.
func serve(ctx context.Context, what, addr string, handler http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	klog.FromContext(ctx).Info("Serving "+what, "address", addr)
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s on %s: %w", what, addr, err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

// kubeClient returns a client from --kubeconfig or the in-cluster config, or
// nil outside a cluster with no kubeconfig.
func kubeClient(kubeconfig string) (*kube.Client, error) {
	var cfg *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading kubernetes client config: %w", err)
	}
	c, err := kube.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	return c, nil
}

func noGPUReason(m *gpu.Machine) string {
	if m.Reason != "" {
		return m.Reason
	}
	if len(m.Failed) > 0 {
		return "every GPU failed to read"
	}
	return "the driver reports no GPUs"
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
