package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Config is the manager's wiring to the kubelet.
type Config struct {
	// PluginDir is the kubelet's device-plugin directory (default
	// /var/lib/kubelet/device-plugins/); the servers' sockets go there.
	PluginDir string
	// KubeletSocket is the kubelet's registration socket (default PluginDir/kubelet.sock).
	KubeletSocket string
	// RegisterTimeout bounds one registration call (default 10s).
	RegisterTimeout time.Duration
}

// HealthSource answers whether a GPU or MIG device, by UUID, is healthy.
type HealthSource interface {
	Healthy(uuid string) bool
}

// Manager runs one device-plugin server per resource, keeps them registered
// with the kubelet across kubelet restarts, and swaps resources when the
// machine or the configuration changes.
type Manager struct {
	cfg    Config
	health HealthSource

	mu        sync.Mutex
	machine   *gpu.Machine
	opts      Options
	resources []Resource
	// withheld devices (by GPU or MIG UUID) are advertised unhealthy.
	withheld map[string]bool
	// servers is owned by Run's goroutine.
	servers map[string]*server

	reconfigure chan struct{}
	healthWake  chan struct{}
}

// NewManager returns a manager; call Update before Run.
func NewManager(cfg Config, health HealthSource) *Manager {
	if cfg.PluginDir == "" {
		cfg.PluginDir = api.DevicePluginPath
	}
	if cfg.KubeletSocket == "" {
		cfg.KubeletSocket = filepath.Join(cfg.PluginDir, filepath.Base(api.KubeletSocket))
	}
	if cfg.RegisterTimeout == 0 {
		cfg.RegisterTimeout = 10 * time.Second
	}
	return &Manager{
		cfg:         cfg,
		health:      health,
		servers:     map[string]*server{},
		reconfigure: make(chan struct{}, 1),
		healthWake:  make(chan struct{}, 1),
	}
}

// Update computes the resources for a machine and options. On error nothing
// changes: the manager keeps serving the last good resources.
func (m *Manager) Update(machine *gpu.Machine, o Options) error {
	res, err := Build(machine, o)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.machine, m.opts, m.resources = machine, o, res
	m.mu.Unlock()
	select {
	case m.reconfigure <- struct{}{}:
	default:
	}
	return nil
}

// Resources returns the resources currently configured.
func (m *Manager) Resources() []Resource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Resource(nil), m.resources...)
}

// HealthChanged makes every server re-send its device list with current health.
func (m *Manager) HealthChanged() {
	select {
	case m.healthWake <- struct{}{}:
	default:
	}
}

// Withhold advertises the devices of the given GPU and MIG UUIDs as
// unhealthy, so that the kubelet hands none of them to a new pod, until the
// next Withhold call replaces the set (nil releases every device). A layout
// change withholds the GPUs it is about to change.
func (m *Manager) Withhold(uuids []string) {
	m.mu.Lock()
	m.withheld = make(map[string]bool, len(uuids))
	for _, u := range uuids {
		m.withheld[u] = true
	}
	m.mu.Unlock()
	m.HealthChanged()
}

func (m *Manager) healthy(uuid string) bool {
	m.mu.Lock()
	withheld := m.withheld[uuid]
	m.mu.Unlock()
	return !withheld && (m.health == nil || m.health.Healthy(uuid))
}

func (m *Manager) state() (*gpu.Machine, Options) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.machine, m.opts
}

// Run serves and registers the resources until ctx is done. It re-registers
// every server when the kubelet's socket is recreated (a kubelet restart wipes
// plugin sockets) and applies Update calls as they come.
func (m *Manager) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("pluginDir", m.cfg.PluginDir)
	ctx = klog.NewContext(ctx, logger)
	if mc, _ := m.state(); mc == nil {
		return errors.New("device plugin manager has no configuration: Update must succeed before Run")
	}
	if err := os.MkdirAll(m.cfg.PluginDir, 0o750); err != nil {
		return fmt.Errorf("creating device plugin directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", m.cfg.PluginDir, err)
	}
	defer w.Close()
	if err := w.Add(m.cfg.PluginDir); err != nil {
		return fmt.Errorf("watching %s: %w", m.cfg.PluginDir, err)
	}
	defer m.stopAll()

	m.sync(ctx, true)
	for {
		select {
		case <-ctx.Done():
			logger.Info("Stopping device plugin servers")
			return nil
		case <-m.reconfigure:
			m.sync(ctx, false)
		case <-m.healthWake:
			for _, s := range m.servers {
				s.notify()
			}
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("device plugin directory watch closed")
			}
			if ev.Name == m.cfg.KubeletSocket && ev.Has(fsnotify.Create) {
				logger.Info("Kubelet socket recreated; restarting and re-registering every device plugin server")
				m.stopAll()
				m.sync(ctx, true)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("device plugin directory watch closed")
			}
			logger.Error(err, "Watching the device plugin directory")
		}
	}
}

// sync makes the running servers match the configured resources: new ones are
// started and registered, gone ones stopped, kept ones updated in place. With
// all set, every server is (re)registered.
func (m *Manager) sync(ctx context.Context, all bool) {
	logger := klog.FromContext(ctx)
	want := map[string]Resource{}
	for _, r := range m.Resources() {
		want[r.Name] = r
	}
	for name, s := range m.servers {
		if _, ok := want[name]; !ok {
			logger.Info("No longer advertising resource", "resource", name)
			s.stop()
			delete(m.servers, name)
		}
	}
	for name, r := range want {
		s, ok := m.servers[name]
		if ok {
			s.update(r)
			if !all {
				continue
			}
		} else {
			s = newServer(m, r)
			if err := s.start(ctx); err != nil {
				logger.Error(err, "Starting device plugin server", "resource", name)
				continue
			}
			m.servers[name] = s
		}
		if err := s.register(ctx, m.cfg.KubeletSocket); err != nil {
			// The kubelet may not be up yet; its socket's creation triggers another attempt.
			logger.Error(err, "Registering with the kubelet", "resource", name)
			continue
		}
		logger.Info("Registered device plugin", "resource", name, "devices", len(r.Devices))
	}
}

func (m *Manager) stopAll() {
	for name, s := range m.servers {
		s.stop()
		delete(m.servers, name)
	}
}
