package sim

import (
	"reflect"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// Fault makes NVML calls fail.
type Fault struct {
	// GPU is the physical GPU index whose calls fail (including calls on its
	// MIG devices, GPU and compute instances); -1 matches system-level calls
	// and calls on any GPU.
	GPU int
	// Call is the method name as Calls counts it ("GetTemperature", "Init",
	// "GpuInstanceDestroy"); "" matches every call.
	Call string
	// Return is what the failing call returns.
	Return nvml.Return
	// Times is how many calls fail before the fault clears itself; 0 means
	// until ClearFaults.
	Times int
}

// InjectFault adds a fault rule. Rules are checked in the order they were
// added; the first that matches a call decides its result.
func (m *Machine) InjectFault(f Fault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = append(m.faults, f)
}

// ClearFaults removes every fault rule. Lost GPUs stay lost.
func (m *Machine) ClearFaults() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = nil
}

// enter is the single check at the top of every simulated call: it counts the
// call, then returns ERROR_UNINITIALIZED before Init, ERROR_GPU_IS_LOST for a
// lost GPU, or the first matching injected fault; SUCCESS lets the call
// proceed. gpu is the physical GPU index or -1 for system-level calls. The
// caller holds m.mu.
func (m *Machine) enter(gpu int, call string) nvml.Return {
	m.calls[call]++
	if m.initCount == 0 && call != "Init" && call != "InitWithFlags" {
		return nvml.ERROR_UNINITIALIZED
	}
	if gpu >= 0 && gpu < len(m.devs) && m.devs[gpu].lost {
		return nvml.ERROR_GPU_IS_LOST
	}
	for i := range m.faults {
		f := &m.faults[i]
		if (f.GPU != -1 && f.GPU != gpu) || (f.Call != "" && f.Call != call) {
			continue
		}
		ret := f.Return
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				m.faults = append(m.faults[:i], m.faults[i+1:]...)
			}
		}
		return ret
	}
	return nvml.SUCCESS
}

// lockedEnter locks m.mu around enter.
func (m *Machine) lockedEnter(gpu int, call string) nvml.Return {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enter(gpu, call)
}

var returnType = reflect.TypeFor[nvml.Return]()

// stubMock replaces every ...Func field of a go-nvml mock (a pointer to a
// mock struct) with a function that goes through enter and then answers
// ERROR_NOT_SUPPORTED with zero values. The simulation's own methods shadow
// the mock's for every call it models, so the stubs answer only calls the
// simulation does not model; without them the mock would panic ("method is
// nil") or, for the calls go-nvml's server fills in, give answers that
// contradict the simulation. Calls are counted as prefix + method name.
func stubMock(m *Machine, mockPtr any, gpu int, prefix string) {
	v := reflect.ValueOf(mockPtr).Elem()
	// The stubs of one mock type, GPU and prefix are interchangeable: make
	// them once and share them between that GPU's instances (a Device mock
	// has hundreds of Func fields, a DGX H100 with seven MIG devices per GPU
	// hundreds of mocks).
	for i, fn := range m.sharedStubs(stubKey{typ: v.Type(), gpu: gpu, prefix: prefix}) {
		if fn.IsValid() {
			v.Field(i).Set(fn)
		}
	}
}

// stubKey identifies a set of stubs that can be shared.
type stubKey struct {
	typ    reflect.Type
	gpu    int
	prefix string
}

// sharedStubs returns the stubs of key, making them on first use.
func (m *Machine) sharedStubs(key stubKey) []reflect.Value {
	m.stubMu.Lock()
	defer m.stubMu.Unlock()
	fns, ok := m.stubs[key]
	if !ok {
		fns = makeStubs(m, key.typ, key.gpu, key.prefix)
		if m.stubs == nil {
			m.stubs = map[stubKey][]reflect.Value{}
		}
		m.stubs[key] = fns
	}
	return fns
}

// migMock returns the go-nvml mock the MIG devices of gpu embed. It holds
// only stubs (the simulation's migDevice methods shadow every call it
// models), the same for every MIG device of a GPU, so they share one: a
// Device mock is about 20 KB (a Func, a lock and a call log per method).
func (m *Machine) migMock(gpu int) *mock.Device {
	m.stubMu.Lock()
	d := m.migMocks[gpu]
	m.stubMu.Unlock()
	if d != nil {
		return d
	}
	d = &mock.Device{}
	stubMock(m, d, gpu, "")
	m.stubMu.Lock()
	defer m.stubMu.Unlock()
	if prev := m.migMocks[gpu]; prev != nil {
		return prev
	}
	if m.migMocks == nil {
		m.migMocks = map[int]*mock.Device{}
	}
	m.migMocks[gpu] = d
	return d
}

// makeStubs returns, for each field of the mock struct type t, its stub when
// the field is an exported ...Func field, else the zero Value.
func makeStubs(m *Machine, t reflect.Type, gpu int, prefix string) []reflect.Value {
	fns := make([]reflect.Value, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Func || !strings.HasSuffix(f.Name, "Func") {
			continue
		}
		name := strings.TrimSuffix(f.Name, "Func")
		ft := f.Type
		fns[i] = reflect.MakeFunc(ft, func([]reflect.Value) []reflect.Value {
			ret := m.lockedEnter(gpu, prefix+name)
			if ret == nvml.SUCCESS {
				ret = nvml.ERROR_NOT_SUPPORTED
			}
			return zeroResults(ft, ret)
		})
	}
	return fns
}

// zeroResults returns zero values for ft's results, with ret in the last
// result when it is an nvml.Return.
func zeroResults(ft reflect.Type, ret nvml.Return) []reflect.Value {
	out := make([]reflect.Value, ft.NumOut())
	for j := range out {
		out[j] = reflect.Zero(ft.Out(j))
	}
	if n := ft.NumOut(); n > 0 && ft.Out(n-1) == returnType {
		out[n-1] = reflect.ValueOf(ret)
	}
	return out
}
