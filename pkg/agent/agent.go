package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/plans"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpuaudit"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
)

// Agent is one node's GPU agent, wired and started by New and run by Run.
type Agent struct {
	cfg Config

	tracker  *health.Tracker
	mgr      *deviceplugin.Manager
	cfgr     *deviceplugin.Configurator
	reg      *prometheus.Registry
	pods     *podresources.Cache
	exporter *telemetry.Exporter
	layouts  *reconcile.Reconciler // nil standalone
	// publisher keeps the GPUNode and GFD labels (nil standalone or when
	// Config.GPUNodes is nil).
	publisher *inventory.Publisher
	// podIndex names this node's pods by UID for per-pod usage and the
	// audit (nil standalone or when neither is on); audit is nil when off.
	podIndex *procmap.PodIndex
	audit    *gpuaudit.Auditor

	// nodes is the process's one informer on its Node (nil standalone),
	// shared by the layout reconciler and the inventory publisher.
	nodes cache.SharedIndexInformer
	// recorder is the process's one Event recorder (nil standalone), shared
	// by telemetry and the layout reconciler; stopEvents flushes it.
	recorder   *kube.Recorder
	stopEvents func()

	mu      sync.Mutex
	machine *gpu.Machine
	running map[string]bool // components of Run still running, for shutdown reports
}

// Run builds an agent from cfg and runs it until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New validates cfg and does what must happen before anything is
// advertised, in this order: discover the GPUs; standalone, apply the
// layout StandaloneMIGConfig names; read the node's device-plugin config
// label (an unreachable API server is waited for at most NodeReadTimeout,
// then the default config serves until it returns); apply that config,
// refusing to start on a bad one (nothing would be advertised correctly);
// and, in a cluster, finish or roll back a MIG layout change an earlier
// agent left half done, so that no half layout is ever served.
func New(ctx context.Context, cfg Config) (_ *Agent, err error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid agent config: %w", errs.ToAggregate())
	}
	cfg = cfg.withDefaults()
	logger := klog.FromContext(ctx)
	a := &Agent{cfg: cfg, running: map[string]bool{}}

	m, err := cfg.Backend.Discover(ctx)
	if err != nil {
		return nil, fmt.Errorf("discovering gpus: %w", err)
	}
	applier := mig.NewApplier(cfg.Backend, cfg.MIGJournal)
	if cfg.StandaloneMIGConfig != "" {
		if m, err = applyStandaloneLayout(ctx, applier, cfg.MIGConfigFile, cfg.StandaloneMIGConfig, m); err != nil {
			return nil, err
		}
	}
	logMachine(logger, m)
	a.machine = m

	standalone := cfg.Client == nil
	a.pods = podresources.New(podresources.Options{Socket: cfg.PodResourcesSocket, Interval: cfg.PodResourcesInterval,
		Clock: cfg.Clock, KubeletOptional: standalone})
	a.tracker = health.NewTracker(cfg.HealthPolicy, cfg.Clock, deviceplugin.TrackedGPUs(m))
	dpCfg := deviceplugin.Config{PluginDir: cfg.PluginDir}
	if !standalone && !cfg.IgnoreSchedulerPlans {
		dpCfg.Plans = plans.New(cfg.NodeName, cfg.Client, a.pods)
	}
	a.mgr = deviceplugin.NewManager(dpCfg, a.tracker)
	a.cfgr = deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: cfg.DevicePluginConfigDir,
		Default: cfg.DevicePluginConfigDefault, SharePolicy: cfg.SharePolicy}, a.mgr, m)

	a.reg = cfg.Registry
	if a.reg == nil {
		a.reg = prometheus.NewRegistry()
		a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics, err := deviceplugin.NewMetrics(a.reg, a.mgr)
	if err != nil {
		return nil, fmt.Errorf("registering device plugin metrics: %w", err)
	}
	a.cfgr.SetMetrics(metrics)

	if err := a.pods.Register(a.reg); err != nil {
		return nil, fmt.Errorf("registering pod resources metrics: %w", err)
	}

	if !standalone {
		a.nodes = kube.NewNodeInformer(cfg.Client.NodeListWatch(cfg.NodeName))
		// The recorder outlives ctx: Events recorded while the agent shuts
		// down are written, within ShutdownTimeout (Run stops it).
		a.recorder, a.stopEvents = kube.NewEventRecorder(context.WithoutCancel(ctx), cfg.Client, EventComponent, cfg.NodeName)
		defer func() {
			if err != nil {
				a.stopEvents()
			}
		}()
	}
	var procs *procmap.Map
	if cfg.PodUsage || cfg.GPUAudit != nil {
		if procs, err = a.processOwners(); err != nil {
			return nil, err
		}
	}
	topts := telemetry.Options{
		Backend:  cfg.Backend,
		Machine:  m,
		Pods:     a.pods,
		Health:   a.tracker,
		NodeName: cfg.NodeName,
		Interval: cfg.CollectionInterval,
		Clock:    cfg.Clock,
		FatalXID: a.tracker.Policy().IsFatalXID,
	}
	if a.recorder != nil {
		topts.Recorder = a.recorder
	}
	if cfg.PodUsage {
		topts.Processes = procs
	}
	if a.exporter, err = telemetry.New(topts); err != nil {
		return nil, fmt.Errorf("creating the telemetry exporter: %w", err)
	}
	if cfg.GPUAudit != nil {
		deps := gpuaudit.Deps{Allocations: a.pods, Owners: procs, Machine: m, Clock: cfg.Clock}
		if a.recorder != nil {
			deps.Recorder = a.recorder
		}
		if a.audit, err = gpuaudit.New(*cfg.GPUAudit, deps); err != nil {
			return nil, fmt.Errorf("creating the gpu audit: %w", err)
		}
		if err := a.audit.Register(a.reg); err != nil {
			return nil, fmt.Errorf("registering gpu audit metrics: %w", err)
		}
	}
	if cfg.GPUNodes != nil && !standalone {
		a.publisher, err = inventory.NewPublisher(inventory.Config{
			NodeName: cfg.NodeName, Nodes: cfg.Client, NodeInformer: a.nodes, GPUNodes: cfg.GPUNodes,
			Devices: a.mgr, Health: a.tracker, Pods: a.pods,
			MachineType: cfg.MachineType, DisableLabels: cfg.DisableGFDLabels,
			HeartbeatInterval: cfg.InventoryHeartbeat, MinWriteInterval: cfg.InventoryMinWriteInterval,
			ResyncInterval: cfg.InventoryResyncInterval, Clock: cfg.Clock,
		})
		if err != nil {
			return nil, fmt.Errorf("creating the inventory publisher: %w", err)
		}
		if err := a.publisher.Register(a.reg); err != nil {
			return nil, fmt.Errorf("registering inventory metrics: %w", err)
		}
	}

	label := ""
	if standalone {
		logger.Info("No Kubernetes API configured; running standalone with the default device-plugin config")
	} else {
		label = a.readConfigLabel(ctx)
	}
	// A bad config at start refuses to start: nothing would be advertised correctly.
	name, err := a.cfgr.Apply(ctx, label)
	if err != nil {
		return nil, fmt.Errorf("applying the device plugin config: %w", err)
	}
	logger.Info("Device plugin config applied", "config", displayName(name))

	if !standalone {
		rcfg := reconcile.Config{
			NodeName: cfg.NodeName, Client: cfg.Client, NodeInformer: a.nodes, Recorder: a.recorder, Machine: m, Discoverer: cfg.Backend,
			Pods: a.pods, Sharing: a.cfgr, Devices: a.mgr, Health: a.tracker, SharingDir: cfg.DevicePluginConfigDir,
			Drain: cfg.MIGDrain, DrainTimeout: cfg.MIGDrainTimeout, ApplyTimeout: cfg.MIGApplyTimeout,
			PollInterval: cfg.MIGDrainPollInterval, OnMachine: a.setMachine,
		}
		if cfg.MIGConfigFile != "" {
			rcfg.Layouts = reconcile.MIGLayouts{File: cfg.MIGConfigFile, Applier: applier}
		}
		if rcfg.Metrics, err = reconcile.NewMetrics(a.reg); err != nil {
			return nil, fmt.Errorf("registering layout metrics: %w", err)
		}
		if a.layouts, err = reconcile.New(rcfg); err != nil {
			return nil, err
		}
		// Before anything is advertised: never serve half a layout an
		// agent stopped in the middle of.
		if err := a.layouts.Recover(ctx); err != nil {
			logger.Error(err, "Recovering an interrupted MIG layout change; the label reconcile will replan")
		}
	}
	return a, nil
}

// readConfigLabel reads the node's device-plugin config label, retrying
// for at most NodeReadTimeout. An API server that cannot be reached, or a
// node that does not exist yet, leaves the default config ("") serving: the
// layout reconciler applies the label once the API server answers.
func (a *Agent) readConfigLabel(ctx context.Context) string {
	logger := klog.FromContext(ctx)
	rctx, cancel := context.WithTimeout(ctx, a.cfg.NodeReadTimeout)
	defer cancel()
	var node *v1.Node
	var lastErr error
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 20, Cap: 2 * time.Second}
	_ = wait.ExponentialBackoffWithContext(rctx, backoff, func(ctx context.Context) (bool, error) {
		node, lastErr = a.cfg.Client.GetNode(ctx, a.cfg.NodeName)
		return lastErr == nil || apierrors.IsNotFound(lastErr), nil
	})
	switch {
	case lastErr == nil && node != nil:
		return node.Labels[config.NodeLabel]
	case apierrors.IsNotFound(lastErr):
		logger.Info("Own node not found; serving the default device-plugin config until it appears", "node", a.cfg.NodeName)
	case lastErr == nil:
		lastErr = rctx.Err()
		fallthrough
	default:
		logger.Error(lastErr, "Reading own node failed; serving the default device-plugin config until the API server answers",
			"node", a.cfg.NodeName, "waited", a.cfg.NodeReadTimeout)
	}
	return ""
}

// noPods is the pod directory of a standalone agent: it knows no pod, so a
// process in a pod's cgroup is attributed to an unknown pod.
type noPods struct{}

func (noPods) Pod(string) (procmap.PodInfo, bool) { return procmap.PodInfo{}, false }

// processOwners builds the PID -> container -> pod map of per-pod usage and
// the audit, with the pod index it reads names from.
func (a *Agent) processOwners() (*procmap.Map, error) {
	var pods procmap.PodDirectory = noPods{}
	if a.cfg.Client != nil {
		a.podIndex = procmap.NewPodIndex(a.cfg.Client.PodListWatch(a.cfg.NodeName))
		pods = a.podIndex
	}
	cgroups := a.cfg.Cgroups
	if cgroups == nil {
		cgroups = procmap.ProcFS{}
	}
	procs, err := procmap.New(procmap.Options{Cgroups: cgroups, Pods: pods, TTL: a.cfg.PodResourcesInterval, Clock: a.cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("creating the process map: %w", err)
	}
	return procs, nil
}

// setMachine hands the machine after a layout change to the parts that
// follow it besides the device plugin and health (which the reconciler
// updates itself).
func (a *Agent) setMachine(m *gpu.Machine) {
	a.mu.Lock()
	a.machine = m
	a.mu.Unlock()
	a.exporter.SetMachine(m)
	if a.publisher != nil {
		a.publisher.Notify() // it reads the machine from the device plugin
	}
	if a.audit != nil {
		a.audit.SetMachine(m)
	}
}

// Machine returns the machine as of the last layout change.
func (a *Agent) Machine() *gpu.Machine {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.machine
}

// Resources returns what the device plugin advertises now.
func (a *Agent) Resources() []deviceplugin.Resource { return a.mgr.Resources() }

// Registry returns the registry of the agent's metrics.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Health returns every GPU's health.
func (a *Agent) Health() []gpu.HealthStatus { return a.tracker.States() }

// Run runs the agent until ctx is done, then shuts it down within
// ShutdownTimeout: the device-plugin servers stop, the servers of
// MetricsAddress and DebugAddress drain, a layout change in progress rolls
// back and writes its final state, and queued Events are written. It
// returns an error when a component failed (the others are then stopped
// too) or did not stop in time, naming it.
func (a *Agent) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	type result struct {
		name string
		err  error
	}
	// Buffered for every component, so that one still running when Run
	// gives up on it can still end.
	results := make(chan result, 16)
	pending := 0
	start := func(name string, run func(context.Context) error) {
		pending++
		a.mu.Lock()
		a.running[name] = true
		a.mu.Unlock()
		go func() {
			err := run(ctx)
			a.mu.Lock()
			delete(a.running, name)
			a.mu.Unlock()
			results <- result{name, err}
		}()
	}
	start("device plugin", a.mgr.Run)
	healthLoop := deviceplugin.HealthLoop{
		Events: gpu.TeeEvents(a.cfg.Backend, a.exporter.ObserveEvent), Tracker: a.tracker, Manager: a.mgr,
		Clock: a.cfg.Clock, Discoverer: a.cfg.Backend, ProbeInterval: a.cfg.LostGPUProbeInterval,
	}
	if a.publisher != nil {
		healthLoop.OnChange = a.publisher.Notify // a health change is published now, not at the next resync
	}
	start("health", healthLoop.Run)
	start("pod resources", a.pods.Run)
	start("telemetry", a.exporter.Run)
	if a.nodes != nil {
		start("node watch", func(ctx context.Context) error {
			a.nodes.RunWithContext(ctx)
			return nil
		})
	}
	if a.layouts != nil {
		start("layouts", a.layouts.Run)
	}
	if a.publisher != nil {
		start("inventory", a.publisher.Run)
	}
	if a.podIndex != nil {
		start("pod index", a.podIndex.Run)
	}
	if a.audit != nil {
		start("gpu audit", a.audit.Run)
	}
	if a.cfg.MetricsAddress != "" {
		start("metrics server", func(ctx context.Context) error {
			return a.serve(ctx, "metrics", a.cfg.MetricsAddress, a.Handler())
		})
	}
	if a.cfg.DebugAddress != "" {
		start("pprof server", func(ctx context.Context) error { return a.serve(ctx, "pprof", a.cfg.DebugAddress, pprofMux()) })
	}

	var errs []error
	collect := func(r result) {
		pending--
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
			cancel(r.err) // one component failing stops the agent
		}
	}
	for ctx.Err() == nil && pending > 0 {
		collect(<-results)
	}
	logger.Info("Shutting down", "timeout", a.cfg.ShutdownTimeout)
	deadline := a.cfg.Clock.NewTimer(a.cfg.ShutdownTimeout)
	defer deadline.Stop()
	for pending > 0 {
		select {
		case r := <-results:
			collect(r)
		case <-deadline.C():
			if a.stopEvents != nil {
				go a.stopEvents() // best effort: the process is about to end
			}
			return errors.Join(append(errs, fmt.Errorf("shutting down: still running after %s: %s",
				a.cfg.ShutdownTimeout, strings.Join(a.stillRunning(), ", ")))...)
		}
	}
	if a.stopEvents != nil {
		stopped := make(chan struct{})
		go func() {
			a.stopEvents()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-deadline.C():
			errs = append(errs, fmt.Errorf("shutting down: queued events not written within %s", a.cfg.ShutdownTimeout))
		}
	}
	logger.Info("Shut down")
	return errors.Join(errs...)
}

func (a *Agent) stillRunning() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for name := range a.running {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// serve serves handler on addr until ctx is done, then drains it within the
// shutdown timeout; what names it in logs and errors.
func (a *Agent) serve(ctx context.Context, what, addr string, handler http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	klog.FromContext(ctx).Info("Serving "+what, "address", addr)
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s on %s: %w", what, addr, err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			return fmt.Errorf("stopping %s server on %s: %w", what, addr, err)
		}
		return nil
	}
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

func logMachine(logger klog.Logger, m *gpu.Machine) {
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

func displayName(name string) string {
	if name == "" {
		return "built-in default"
	}
	return name
}
