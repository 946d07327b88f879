package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/google/uuid"
	"k8s.io/utils/clock"
)

// Machine is a simulated GPU machine. Its NVML method returns the simulated
// library; the other methods steer the simulation (load, events, faults). It is
// safe for concurrent use.
type Machine struct {
	name    string
	profile Profile
	clock   clock.PassiveClock

	// mu guards all simulation state below and in devices, instances, samples.
	mu        sync.Mutex
	initCount int
	calls     map[string]int
	faults    []Fault
	lib       *library
	devs      []*device
	switches  []nvml.PciInfo // NVSwitch PCI functions of an NVSwitch system
	eventSets map[*eventSet]struct{}

	driverVersion, nvmlVersion string
	cudaVersion                int

	// stubMu guards stubs, the shared stubs of stubMock, and migMocks, the
	// shared mocks of migMock (taken with or without mu held).
	stubMu   sync.Mutex
	stubs    map[stubKey][]reflect.Value
	migMocks map[int]*mock.Device
}

// Option configures a Machine.
type Option func(*options)

type options struct {
	clock clock.PassiveClock
	name  string
}

// WithClock sets the clock that drives energy integration, GPM timestamps and
// field-value timestamps. The default is the real clock.
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithName overrides the machine name of the description, which also seeds
// the GPU UUIDs: give simulated nodes that share a description distinct names
// (for example the node name) so that their UUIDs differ.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// Open returns the machine spec names: a built-in machine ("dgx-h100") or a
// path to a .yaml/.yml machine description.
func Open(spec string, opts ...Option) (*Machine, error) {
	ext := strings.ToLower(filepath.Ext(spec))
	if ext != ".yaml" && ext != ".yml" && !strings.ContainsRune(spec, os.PathSeparator) {
		p, err := builtinProfile(spec)
		if err != nil {
			return nil, err
		}
		return New(p, opts...)
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return nil, fmt.Errorf("reading machine description: %w", err)
	}
	p, err := ParseProfile(data)
	if err != nil {
		return nil, fmt.Errorf("machine description %s: %w", spec, err)
	}
	return New(p, opts...)
}

// New builds a machine from a profile, which it validates and completes with
// defaults.
func New(p Profile, opts ...Option) (*Machine, error) {
	p = p.clone()
	if err := p.complete(); err != nil {
		return nil, err
	}
	o := options{clock: clock.RealClock{}}
	for _, opt := range opts {
		opt(&o)
	}
	name := p.Name
	if o.name != "" {
		name = o.name
	}
	cv := cudaVersionRE.FindStringSubmatch(p.CUDADriverVersion)
	major, _ := strconv.Atoi(cv[1])
	minor, _ := strconv.Atoi(cv[2])

	models := p.models()
	cfgs := make([]gpus.Config, len(models))
	for i, md := range models {
		cfgs[i] = md.config()
	}
	m := &Machine{
		name:          name,
		profile:       p,
		clock:         o.clock,
		calls:         map[string]int{},
		eventSets:     map[*eventSet]struct{}{},
		driverVersion: p.DriverVersion,
		nvmlVersion:   fmt.Sprintf("%d.%s", major, p.DriverVersion),
		cudaVersion:   major*1000 + minor*10,
	}
	srv, err := server.New(
		server.WithGPUs(cfgs...),
		server.WithDriverVersion(m.driverVersion),
		server.WithNVMLVersion(m.nvmlVersion),
		server.WithCUDADriverVersion(m.cudaVersion),
	)
	if err != nil {
		return nil, fmt.Errorf("building simulated machine %s: %w", name, err)
	}
	now := m.clock.Now()
	for i, md := range models {
		m.devs = append(m.devs, newDevice(m, i, md, srv.Devices[i].(*server.Device), now))
	}
	m.buildTopology()
	m.lib = newLibrary(m, srv)
	return m, nil
}

func (p Profile) clone() Profile {
	c := p
	c.GPUs = slices.Clone(p.GPUs)
	c.PCIBusIDs = slices.Clone(p.PCIBusIDs)
	cl := func(in [][]int) [][]int {
		if in == nil {
			return nil
		}
		out := make([][]int, len(in))
		for i := range in {
			out[i] = slices.Clone(in[i])
		}
		return out
	}
	c.Topology.NVLinkBridges = cl(p.Topology.NVLinkBridges)
	c.Topology.PCIeSwitches = cl(p.Topology.PCIeSwitches)
	c.Topology.PCIeUpstream = cl(p.Topology.PCIeUpstream)
	c.Topology.HostBridges = cl(p.Topology.HostBridges)
	c.Topology.NUMA = slices.Clone(p.Topology.NUMA)
	return c
}

// uuidSpace is the name space of simulated GPU and MIG UUIDs.
var uuidSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/tessera-gpu/tessera/pkg/gpu/sim"))

func gpuUUID(machine string, index int) string {
	return "GPU-" + uuid.NewSHA1(uuidSpace, []byte(machine+"/gpu/"+strconv.Itoa(index))).String()
}

func migUUID(parent string, gi, ci uint32) string {
	return "MIG-" + uuid.NewSHA1(uuidSpace, fmt.Appendf(nil, "%s/gi/%d/ci/%d", parent, gi, ci)).String()
}

// Name returns the machine's name.
func (m *Machine) Name() string { return m.name }

// Profile returns the completed description the machine was built from.
func (m *Machine) Profile() Profile { return m.profile.clone() }

// NumGPUs returns the number of GPUs.
func (m *Machine) NumGPUs() int { return len(m.devs) }

// UUID returns GPU gpu's UUID, or "" for an unknown index.
func (m *Machine) UUID(gpu int) string {
	if gpu < 0 || gpu >= len(m.devs) {
		return ""
	}
	return m.devs[gpu].uuid
}

// NVML returns the simulated NVML library.
func (m *Machine) NVML() nvml.Interface { return m.lib }

// Calls returns how many times the NVML call name was made (see the package
// documentation for the names).
func (m *Machine) Calls(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[name]
}

// ResetCalls sets all call counts to zero.
func (m *Machine) ResetCalls() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.calls)
}

// gpu returns the device at index or an error naming the valid range.
func (m *Machine) gpu(index int) (*device, error) {
	if index < 0 || index >= len(m.devs) {
		return nil, fmt.Errorf("gpu %d: no such GPU on machine %s (valid indices 0..%d)", index, m.name, len(m.devs)-1)
	}
	return m.devs[index], nil
}

// LoseGPU makes GPU gpu fall off the bus: from now on every call on it, its
// MIG devices and instances returns ERROR_GPU_IS_LOST, and event sets
// registered for XID events on it receive XID 79.
func (m *Machine) LoseGPU(gpu int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	if d.lost {
		return nil
	}
	d.advance(m.clock.Now())
	d.lost = true
	d.emit(nvml.EventTypeXidCriticalError, 79, nil, nil)
	return nil
}

// RecoverGPU brings a lost GPU back as after a GPU reset; see ResetGPU.
func (m *Machine) RecoverGPU(gpu int) error { return m.ResetGPU(gpu) }

// ResetGPU resets GPU gpu: it answers again if it was lost, its MIG instances
// are gone and a pending MIG mode takes effect, processes have ended, volatile
// ECC counters are cleared and pending row remappings are applied.
func (m *Machine) ResetGPU(gpu int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	d.reset(m.clock.Now())
	return nil
}

// SetResetRequiredForMIG makes SetMigMode on GPU gpu only set the pending
// mode (activation status ERROR_RESET_REQUIRED), as on platforms where the
// driver cannot reset the GPU itself, until ResetGPU or RecoverGPU.
func (m *Machine) SetResetRequiredForMIG(gpu int, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	d.resetRequiredForMIG = on
	return nil
}
