package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/util/wait"
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
	// RegisterBackoff paces the retries of a failed registration (default:
	// 20 ms doubling to 400 ms, 20 % jitter, retried until it succeeds or the
	// kubelet's socket is recreated). The cap keeps re-registration within a
	// second of the kubelet listening.
	RegisterBackoff wait.Backoff
	// Plans, when set, lets GetPreferredAllocation follow the devices
	// gpu-scheduler planned for the pod being admitted (see choose).
	Plans PlanSource
}

// defaultRegisterBackoff retries forever: Steps is only a counter here, the
// cap is what bounds the wait.
var defaultRegisterBackoff = wait.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.2, Cap: 400 * time.Millisecond, Steps: math.MaxInt32}

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
	// registered names the resources the kubelet accepted since their server
	// last (re)started; registerFailures counts refused attempts.
	registered       map[string]bool
	registerFailures int
	// preferredBy counts preferred allocations by source (plan, own).
	preferredBy map[string]uint64
	// servers is owned by Run's goroutine.
	servers map[string]*server
	// unregistered names the resources whose server failed to start or to
	// register; Run's goroutine retries them with backoff. A kubelet socket
	// file appears before the kubelet listens on it (bind precedes listen), so
	// the first attempt after a restart may be refused.
	unregistered map[string]bool
	backoff      wait.Backoff

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
	if cfg.RegisterBackoff.Duration == 0 {
		cfg.RegisterBackoff = defaultRegisterBackoff
	}
	return &Manager{
		cfg:          cfg,
		health:       health,
		servers:      map[string]*server{},
		unregistered: map[string]bool{},
		registered:   map[string]bool{},
		reconfigure:  make(chan struct{}, 1),
		healthWake:   make(chan struct{}, 1),
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

// Advertised returns, as one consistent view, the machine the resources
// were built from, the options they were built with and the resources
// (for the node inventory); the machine is nil before the first Update.
func (m *Manager) Advertised() (*gpu.Machine, Options, []Resource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.machine, m.opts, append([]Resource(nil), m.resources...)
}

// RegistrationStatus reports whether every configured resource is registered
// with the kubelet and how many registration attempts have failed so far.
func (m *Manager) RegistrationStatus() (registered bool, failures int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.resources {
		if !m.registered[r.Name] {
			return false, m.registerFailures
		}
	}
	return m.machine != nil, m.registerFailures
}

func (m *Manager) setRegistered(name string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok {
		m.registered[name] = true
	} else {
		delete(m.registered, name)
		m.registerFailures++
	}
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

	// retry fires while some resource is unregistered; nil otherwise.
	var retry *time.Timer
	var retryC <-chan time.Time
	schedule := func(reset bool) {
		if reset {
			m.backoff = m.cfg.RegisterBackoff
		}
		if retry != nil {
			retry.Stop()
			retry, retryC = nil, nil
		}
		if len(m.unregistered) > 0 {
			retry = time.NewTimer(m.backoff.Step())
			retryC = retry.C
		}
	}
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()

	m.sync(ctx, true)
	schedule(true)
	for {
		select {
		case <-ctx.Done():
			logger.Info("Stopping device plugin servers")
			return nil
		case <-m.reconfigure:
			m.sync(ctx, false)
			schedule(true)
		case <-retryC:
			retry, retryC = nil, nil
			m.retryUnregistered(ctx)
			schedule(false)
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
				schedule(true)
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
			m.mu.Lock()
			delete(m.registered, name)
			m.mu.Unlock()
		}
	}
	for name := range m.unregistered {
		if _, ok := want[name]; !ok {
			delete(m.unregistered, name)
		}
	}
	for name, r := range want {
		s, ok := m.servers[name]
		if ok {
			s.update(r)
			if !all && !m.unregistered[name] {
				continue
			}
		}
		m.startAndRegister(ctx, r)
	}
}

// retryUnregistered makes another attempt for every resource not yet
// registered with the kubelet.
func (m *Manager) retryUnregistered(ctx context.Context) {
	want := map[string]Resource{}
	for _, r := range m.Resources() {
		want[r.Name] = r
	}
	for name := range m.unregistered {
		if r, ok := want[name]; ok {
			m.startAndRegister(ctx, r)
		} else {
			delete(m.unregistered, name)
		}
	}
}

// startAndRegister starts r's server if it is not running and registers it;
// a failure leaves r in the unregistered set for Run to retry.
func (m *Manager) startAndRegister(ctx context.Context, r Resource) {
	logger := klog.FromContext(ctx)
	s, ok := m.servers[r.Name]
	if !ok {
		s = newServer(m, r)
		if err := s.start(ctx); err != nil {
			logger.Error(err, "Starting device plugin server; will retry", "resource", r.Name)
			m.unregistered[r.Name] = true
			m.setRegistered(r.Name, false)
			return
		}
		m.servers[r.Name] = s
	}
	if err := s.register(ctx, m.cfg.KubeletSocket); err != nil {
		// The kubelet may not be up yet, or its socket exists but does not
		// listen yet: retried with backoff, and again when the socket is recreated.
		if !m.unregistered[r.Name] {
			logger.Info("Registering with the kubelet failed; will retry", "resource", r.Name, "err", err.Error())
		} else {
			logger.V(4).Info("Registering with the kubelet failed again", "resource", r.Name, "err", err.Error())
		}
		m.unregistered[r.Name] = true
		m.setRegistered(r.Name, false)
		return
	}
	delete(m.unregistered, r.Name)
	m.setRegistered(r.Name, true)
	logger.Info("Registered device plugin", "resource", r.Name, "devices", len(r.Devices))
}

func (m *Manager) stopAll() {
	for name, s := range m.servers {
		s.stop()
		delete(m.servers, name)
	}
	clear(m.unregistered)
	m.mu.Lock()
	clear(m.registered)
	m.mu.Unlock()
}
