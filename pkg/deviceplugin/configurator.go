package deviceplugin

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Event reasons the configurator records on the Node.
const (
	ReasonConfigApplied = "DevicePluginConfigApplied"
	ReasonConfigFailed  = "DevicePluginConfigFailed"
)

// ConfigSource says where device-plugin configurations come from.
type ConfigSource struct {
	// Dir is a mounted ConfigMap directory of named configs; empty uses the
	// built-in default (no sharing, MIG strategy none) unless Default names one.
	Dir string
	// Default names the config used while the node has no
	// nvidia.com/device-plugin.config label.
	Default string
	// SharePolicy is the share placement policy (packed by default).
	SharePolicy SharePolicy
}

// Configurator applies the configuration the node label selects to a
// Manager, again whenever the label or the config files change. A config
// that fails leaves the last good one serving and is reported as a log line
// and a Node Event.
type Configurator struct {
	src     ConfigSource
	mgr     *Manager
	machine *gpu.Machine
	metrics *Metrics

	mu      sync.Mutex
	label   string
	applied string // name of the config serving now ("" for the built-in default)
}

// NewConfigurator returns a configurator for one node's machine.
func NewConfigurator(src ConfigSource, mgr *Manager, machine *gpu.Machine) *Configurator {
	return &Configurator{src: src, mgr: mgr, machine: machine}
}

// SetMetrics makes the configurator count its outcomes in m.
func (c *Configurator) SetMetrics(m *Metrics) { c.metrics = m }

// Apply loads the config the label value selects and hands it to the manager.
// On error nothing changes.
func (c *Configurator) Apply(ctx context.Context, label string) (string, error) {
	name, err := c.apply(ctx, label)
	if err != nil {
		c.metrics.failed()
		return "", err
	}
	c.metrics.applied(name)
	return name, nil
}

func (c *Configurator) apply(ctx context.Context, label string) (string, error) {
	cfg, name, err := config.Load(c.src.Dir, label, c.src.Default)
	if err != nil {
		return "", err
	}
	for _, f := range cfg.Ignored {
		klog.FromContext(ctx).Info("Device plugin config sets a field Tessera does not act on", "config", name, "field", f)
	}
	c.mu.Lock()
	machine := c.machine
	c.mu.Unlock()
	o, err := OptionsFromConfig(cfg, machine, c.src.SharePolicy)
	if err != nil {
		return "", fmt.Errorf("device plugin config %q: %w", displayName(name), err)
	}
	if err := c.mgr.Update(machine, o); err != nil {
		return "", fmt.Errorf("device plugin config %q: %w", displayName(name), err)
	}
	c.mu.Lock()
	c.label, c.applied = label, name
	c.mu.Unlock()
	return name, nil
}

// SetMachine switches the configurator to a new machine, as after a MIG
// layout change, and re-applies the config of the label last applied. When
// that config does not fit the new machine, the built-in default (no
// sharing, MIG strategy none) is advertised instead, so that no device of the
// old machine stays advertised; the error says why and the returned name is
// "" for the built-in default.
func (c *Configurator) SetMachine(ctx context.Context, machine *gpu.Machine) (string, error) {
	c.mu.Lock()
	old, label := c.machine, c.label
	c.machine = machine
	c.mu.Unlock()
	name, err := c.Apply(ctx, label)
	if err == nil {
		return name, nil
	}
	if ferr := c.mgr.Update(machine, Options{MIGStrategy: MIGStrategyNone, SharePolicy: c.src.SharePolicy}); ferr != nil {
		c.mu.Lock()
		c.machine = old
		c.mu.Unlock()
		return "", fmt.Errorf("%w; the built-in default does not fit either: %w", err, ferr)
	}
	c.mu.Lock()
	c.applied = ""
	c.mu.Unlock()
	return "", fmt.Errorf("%w; advertising the built-in default config instead", err)
}

// Applied returns the name of the config serving now.
func (c *Configurator) Applied() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

func displayName(name string) string {
	if name == "" {
		return "built-in default"
	}
	return name
}

// Run follows the node's nvidia.com/device-plugin.config label and the
// config directory until ctx is done, recording each outcome as a Node Event.
func (c *Configurator) Run(ctx context.Context, client kubernetes.Interface, nodeName string) error {
	logger := klog.FromContext(ctx).WithValues("node", nodeName)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedEventSink{client: client})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(eventScheme(), v1.EventSource{Component: "tessera-gpu-agent", Host: nodeName})

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
		}))
	nodes := factory.Core().V1().Nodes()
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
	}); err != nil {
		return fmt.Errorf("watching node %s: %w", nodeName, err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return fmt.Errorf("watching node %s: %w", nodeName, ctx.Err())
	}

	var files <-chan fsnotify.Event
	if c.src.Dir != "" {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watching device plugin config directory %s: %w", c.src.Dir, err)
		}
		defer w.Close()
		if err := w.Add(c.src.Dir); err != nil {
			return fmt.Errorf("watching device plugin config directory %s: %w", c.src.Dir, err)
		}
		files = w.Events
	}

	var lastLabel, lastFailure string
	first := true
	for {
		node, err := nodes.Lister().Get(nodeName)
		switch {
		case err != nil:
			logger.Error(err, "Reading own node")
		default:
			label := node.Labels[config.NodeLabel]
			if first || label != lastLabel {
				first = false
				lastLabel = label
				c.reconcile(ctx, recorder, node, label, &lastFailure)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case ev := <-files:
			logger.V(2).Info("Device plugin config directory changed", "file", ev.Name)
			first = true // re-apply the same label: the file behind it may have changed
			// A ConfigMap update swaps several symlinks; let them settle.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func (c *Configurator) reconcile(ctx context.Context, recorder record.EventRecorder, node *v1.Node, label string, lastFailure *string) {
	logger := klog.FromContext(ctx).WithValues("node", node.Name, "label", label)
	name, err := c.Apply(ctx, label)
	if err != nil {
		logger.Error(err, "Device plugin config not applied; still serving the last good one", "serving", displayName(c.Applied()))
		msg := fmt.Sprintf("%v; still serving %q", err, displayName(c.Applied()))
		if msg != *lastFailure {
			recorder.Event(node, v1.EventTypeWarning, ReasonConfigFailed, truncate(msg))
			*lastFailure = msg
		}
		return
	}
	*lastFailure = ""
	logger.Info("Device plugin config applied", "config", displayName(name))
	recorder.Eventf(node, v1.EventTypeNormal, ReasonConfigApplied, "device plugin config %q applied", displayName(name))
}

// truncate keeps Event messages within the API's limit.
func truncate(s string) string {
	const limit = 1000
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
