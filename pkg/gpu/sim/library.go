package sim

import (
	"reflect"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// library is the simulated nvml.Interface. It embeds go-nvml's mock server so
// that it implements the whole interface; the calls Tessera makes are methods
// of its own, the DeviceXxx(device, ...) forms forward to device.Xxx(...) as
// go-nvml does, and everything else answers ERROR_NOT_SUPPORTED.
type library struct {
	*server.Server
	m *Machine
}

var _ nvml.Interface = (*library)(nil)

func newLibrary(m *Machine, srv *server.Server) *library {
	l := &library{Server: srv, m: m}
	stubMock(m, &srv.Interface, -1, "")
	forwardToHandles(&srv.Interface)
	return l
}

// forwardToHandles makes the library calls that take a handle first call the
// handle's method, DeviceXxx(device, ...) -> device.Xxx(...) (the generated
// handleForwarders). The function values come from generated code rather
// than from looking the handle's method up by name with reflect: a
// reachable reflect MethodByName makes the linker keep every exported method
// of every type in the agent binary (cmd/gpu-agent's deps test checks it).
func forwardToHandles(lib *mock.Interface) {
	v := reflect.ValueOf(lib).Elem()
	for name, fn := range handleForwarders() {
		f := v.FieldByName(name + "Func")
		if f.IsValid() && f.Type() == reflect.TypeOf(fn) {
			f.Set(reflect.ValueOf(fn))
		}
	}
}

// Init initialises the library; calls are reference-counted as in NVML.
func (l *library) Init() nvml.Return { return l.init("Init") }

// InitWithFlags is Init; the flags change nothing in the simulation.
func (l *library) InitWithFlags(uint32) nvml.Return { return l.init("InitWithFlags") }

func (l *library) init(call string) nvml.Return {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.enter(-1, call); r != nvml.SUCCESS {
		return r
	}
	m.initCount++
	return nvml.SUCCESS
}

// Shutdown drops one Init reference; the last one invalidates event sets.
func (l *library) Shutdown() nvml.Return {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.enter(-1, "Shutdown"); r != nvml.SUCCESS {
		return r
	}
	m.initCount--
	if m.initCount == 0 {
		for s := range m.eventSets {
			s.close(nvml.ERROR_UNINITIALIZED)
		}
		clear(m.eventSets)
		for _, d := range m.devs {
			clear(d.eventSets)
		}
	}
	return nvml.SUCCESS
}

// ErrorString returns go-nvml's text for r.
func (l *library) ErrorString(r nvml.Return) string { return r.Error() }

// Extensions returns the extension interface; every symbol is "present" (calls
// the simulation does not model answer ERROR_NOT_SUPPORTED instead).
func (l *library) Extensions() nvml.ExtendedInterface { return extensions{} }

type extensions struct{}

func (extensions) LookupSymbol(string) error { return nil }

func (l *library) system(call string) (nvml.Return, *sync.Mutex) {
	l.m.mu.Lock()
	return l.m.enter(-1, call), &l.m.mu
}

// SystemGetDriverVersion returns the driver version ("550.54.15").
func (l *library) SystemGetDriverVersion() (string, nvml.Return) {
	r, unlock := l.system("SystemGetDriverVersion")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	return l.m.driverVersion, nvml.SUCCESS
}

// SystemGetNVMLVersion returns the NVML version ("12.550.54.15").
func (l *library) SystemGetNVMLVersion() (string, nvml.Return) {
	r, unlock := l.system("SystemGetNVMLVersion")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	return l.m.nvmlVersion, nvml.SUCCESS
}

// SystemGetCudaDriverVersion returns the CUDA version as 1000*major+10*minor.
func (l *library) SystemGetCudaDriverVersion() (int, nvml.Return) {
	r, unlock := l.system("SystemGetCudaDriverVersion")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return l.m.cudaVersion, nvml.SUCCESS
}

// SystemGetCudaDriverVersion_v2 is SystemGetCudaDriverVersion.
func (l *library) SystemGetCudaDriverVersion_v2() (int, nvml.Return) {
	r, unlock := l.system("SystemGetCudaDriverVersion_v2")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return l.m.cudaVersion, nvml.SUCCESS
}

// DeviceGetCount returns the number of GPUs, lost ones included.
func (l *library) DeviceGetCount() (int, nvml.Return) {
	r, unlock := l.system("DeviceGetCount")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return len(l.m.devs), nvml.SUCCESS
}

// DeviceGetHandleByIndex returns GPU index's handle.
func (l *library) DeviceGetHandleByIndex(index int) (nvml.Device, nvml.Return) {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	gpu := -1
	if index >= 0 && index < len(m.devs) {
		gpu = index
	}
	if r := m.enter(gpu, "DeviceGetHandleByIndex"); r != nvml.SUCCESS {
		return nil, r
	}
	if gpu < 0 {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return m.devs[gpu], nvml.SUCCESS
}

// DeviceGetHandleByUUID returns the GPU or MIG device with the UUID.
func (l *library) DeviceGetHandleByUUID(id string) (nvml.Device, nvml.Return) {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var found nvml.Device
	gpu := -1
	for _, d := range m.devs {
		if d.uuid == id {
			found, gpu = d, d.index
			break
		}
		for _, h := range d.migHandles() {
			if h.uuid == id {
				found, gpu = h, d.index
			}
		}
	}
	if r := m.enter(gpu, "DeviceGetHandleByUUID"); r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case id == "":
		return nil, nvml.ERROR_INVALID_ARGUMENT
	case found == nil:
		return nil, nvml.ERROR_NOT_FOUND
	}
	return found, nvml.SUCCESS
}

// DeviceGetHandleByPciBusId returns the GPU at a PCI address in either the
// "0000:18:00.0" or the "00000000:18:00.0" form.
func (l *library) DeviceGetHandleByPciBusId(busID string) (nvml.Device, nvml.Return) {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	canon, ok := canonicalBusID(busID)
	gpu := -1
	for _, d := range m.devs {
		if ok && d.busID == canon {
			gpu = d.index
		}
	}
	if r := m.enter(gpu, "DeviceGetHandleByPciBusId"); r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case !ok:
		return nil, nvml.ERROR_INVALID_ARGUMENT
	case gpu < 0:
		return nil, nvml.ERROR_NOT_FOUND
	}
	return m.devs[gpu], nvml.SUCCESS
}

// EventSetCreate returns a new, empty event set.
func (l *library) EventSetCreate() (nvml.EventSet, nvml.Return) {
	r, unlock := l.system("EventSetCreate")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	s := newEventSet(l.m)
	l.m.eventSets[s] = struct{}{}
	return s, nvml.SUCCESS
}

// EventSetWait waits on set; see eventSet.Wait.
func (l *library) EventSetWait(set nvml.EventSet, timeoutms uint32) (nvml.EventData, nvml.Return) {
	if set == nil {
		return nvml.EventData{}, l.m.lockedEnterOr(-1, "EventSetWait", nvml.ERROR_INVALID_ARGUMENT)
	}
	return set.Wait(timeoutms)
}

// EventSetFree frees set.
func (l *library) EventSetFree(set nvml.EventSet) nvml.Return {
	if set == nil {
		return l.m.lockedEnterOr(-1, "EventSetFree", nvml.ERROR_INVALID_ARGUMENT)
	}
	return set.Free()
}

// lockedEnterOr runs enter and returns its failure or, when it lets the call
// proceed, ret.
func (m *Machine) lockedEnterOr(gpu int, call string, ret nvml.Return) nvml.Return {
	if r := m.lockedEnter(gpu, call); r != nvml.SUCCESS {
		return r
	}
	return ret
}

// GpmSampleAlloc allocates a GPM sample buffer.
func (l *library) GpmSampleAlloc() (nvml.GpmSample, nvml.Return) {
	r, unlock := l.system("GpmSampleAlloc")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	return &gpmSample{m: l.m}, nvml.SUCCESS
}

// GpmSampleFree frees a GPM sample buffer.
func (l *library) GpmSampleFree(s nvml.GpmSample) nvml.Return {
	if s == nil {
		return l.m.lockedEnterOr(-1, "GpmSampleFree", nvml.ERROR_INVALID_ARGUMENT)
	}
	return s.Free()
}

// GpmSampleGet takes a GPM sample of device (a GPU or MIG device).
func (l *library) GpmSampleGet(device nvml.Device, s nvml.GpmSample) nvml.Return {
	return l.m.gpmSampleGet(device, s, -1, false, "GpmSampleGet")
}

// GpmMigSampleGet takes a GPM sample of GPU instance gi of device.
func (l *library) GpmMigSampleGet(device nvml.Device, gi int, s nvml.GpmSample) nvml.Return {
	return l.m.gpmSampleGet(device, s, gi, true, "GpmMigSampleGet")
}

// GpmQueryDeviceSupport reports whether device supports GPM.
func (l *library) GpmQueryDeviceSupport(device nvml.Device) (nvml.GpmSupport, nvml.Return) {
	if device == nil {
		return nvml.GpmSupport{}, l.m.lockedEnterOr(-1, "GpmQueryDeviceSupport", nvml.ERROR_INVALID_ARGUMENT)
	}
	return device.GpmQueryDeviceSupport()
}

// GpmMetricsGet computes metrics between two samples.
func (l *library) GpmMetricsGet(g *nvml.GpmMetricsGetType) nvml.Return {
	return l.m.gpmMetricsGet(g)
}
