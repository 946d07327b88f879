package deviceplugin

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Event reasons recorded on the Node for device-plugin config outcomes (by
// pkg/mig/reconcile, which follows the node label and calls Apply).
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

// Configurator applies the configuration a node label value selects to a
// Manager. A config that fails leaves the last good one serving. Following
// the label and the config directory, and reporting outcomes as Events and
// a state label, is pkg/mig/reconcile's job.
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
