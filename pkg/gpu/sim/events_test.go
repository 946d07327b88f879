package sim

import (
	"math"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func createEventSet(t *testing.T, lib nvml.Interface) nvml.EventSet {
	t.Helper()
	s, r := lib.EventSetCreate()
	wantRet(t, "EventSetCreate", r, nvml.SUCCESS)
	return s
}

func TestEvents(t *testing.T) {
	const whole = math.MaxUint32
	tests := []struct {
		name      string
		machine   string
		gpu       int
		register  uint64
		inject    func(m *Machine) error
		wantType  uint64
		wantData  uint64
		wantGI    uint32
		wantCI    uint32
		wantEvent bool
	}{
		{name: "xid", machine: "dgx-h100", gpu: 2, register: nvml.EventTypeXidCriticalError,
			inject: func(m *Machine) error { return m.InjectXID(2, 43) }, wantType: nvml.EventTypeXidCriticalError, wantData: 43, wantGI: whole, wantCI: whole, wantEvent: true},
		{name: "single-bit ECC", machine: "dgx-a100", gpu: 1, register: nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError,
			inject: func(m *Machine) error { return m.InjectECC(1, false) }, wantType: nvml.EventTypeSingleBitEccError, wantGI: whole, wantCI: whole, wantEvent: true},
		{name: "double-bit ECC", machine: "pcie-4xl40s", gpu: 3, register: nvml.EventTypeDoubleBitEccError,
			inject: func(m *Machine) error { return m.InjectECC(3, true) }, wantType: nvml.EventTypeDoubleBitEccError, wantGI: whole, wantCI: whole, wantEvent: true},
		{name: "gpu lost", machine: "ws-2xrtx4090", gpu: 0, register: nvml.EventTypeXidCriticalError,
			inject: func(m *Machine) error { return m.LoseGPU(0) }, wantType: nvml.EventTypeXidCriticalError, wantData: 79, wantGI: whole, wantCI: whole, wantEvent: true},
		{name: "other gpu", machine: "dgx-h100", gpu: 2, register: nvml.EventTypeXidCriticalError,
			inject: func(m *Machine) error { return m.InjectXID(3, 43) }},
		{name: "other type", machine: "dgx-h100", gpu: 2, register: nvml.EventTypeXidCriticalError,
			inject: func(m *Machine) error { return m.InjectECC(2, false) }},
		{name: "nothing", machine: "dgx-b200", gpu: 0, register: nvml.EventTypeXidCriticalError,
			inject: func(m *Machine) error { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, lib, _ := newMachine(t, tt.machine)
			d := handle(t, lib, tt.gpu)
			s := createEventSet(t, lib)
			defer func() { wantRet(t, "EventSetFree", s.Free(), nvml.SUCCESS) }()
			wantRet(t, "RegisterEvents", d.RegisterEvents(tt.register, s), nvml.SUCCESS)
			if err := tt.inject(m); err != nil {
				t.Fatal(err)
			}
			e, r := s.Wait(20)
			if !tt.wantEvent {
				wantRet(t, "Wait", r, nvml.ERROR_TIMEOUT)
				return
			}
			wantRet(t, "Wait", r, nvml.SUCCESS)
			if e.Device != d || e.EventType != tt.wantType || e.EventData != tt.wantData || e.GpuInstanceId != tt.wantGI || e.ComputeInstanceId != tt.wantCI {
				t.Errorf("event %+v", e)
			}
			if _, r := s.Wait(0); r != nvml.ERROR_TIMEOUT {
				t.Errorf("second Wait: %v", r)
			}
		})
	}
}

func TestMIGXIDEvent(t *testing.T) {
	m, lib, d := newMIGEnabledGPU(t, "dgx-h100", 6)
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_2_SLICE, 2)
	a, b := createEventSet(t, lib), createEventSet(t, lib)
	for _, s := range []nvml.EventSet{a, b} {
		wantRet(t, "RegisterEvents", d.RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.SUCCESS)
	}
	if err := m.InjectMIGXID(6, 4, 0, 31); err != nil {
		t.Fatal(err)
	}
	for _, s := range []nvml.EventSet{a, b} {
		e, r := s.Wait(1000)
		if r != nvml.SUCCESS || e.EventData != 31 || e.GpuInstanceId != 4 || e.ComputeInstanceId != 0 || e.Device != d {
			t.Errorf("event %+v %v", e, r)
		}
	}
	if err := m.InjectMIGXID(6, 5, 0, 31); err == nil {
		t.Errorf("InjectMIGXID on a missing GPU instance succeeded")
	}
	if err := m.InjectMIGXID(6, 4, 1, 31); err == nil {
		t.Errorf("InjectMIGXID on a missing compute instance succeeded")
	}
	if err := m.InjectXID(9, 31); err == nil {
		t.Errorf("InjectXID on GPU 9 succeeded")
	}
}

func TestRegisterEvents(t *testing.T) {
	_, lib, _ := newMachine(t, "ws-2xrtx4090")
	d := handle(t, lib, 1)
	s := createEventSet(t, lib)
	supported, r := d.GetSupportedEventTypes()
	wantRet(t, "GetSupportedEventTypes", r, nvml.SUCCESS)
	if supported&nvml.EventTypeXidCriticalError == 0 || supported&nvml.EventTypeSingleBitEccError != 0 {
		t.Errorf("supported events %#x", supported)
	}
	wantRet(t, "RegisterEvents(ECC)", d.RegisterEvents(nvml.EventTypeSingleBitEccError|nvml.EventTypeXidCriticalError, s), nvml.ERROR_NOT_SUPPORTED)
	wantRet(t, "RegisterEvents(XID)", d.RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.SUCCESS)
	wantRet(t, "RegisterEvents(nil)", d.RegisterEvents(nvml.EventTypeXidCriticalError, nil), nvml.ERROR_INVALID_ARGUMENT)
	wantRet(t, "Free", s.Free(), nvml.SUCCESS)
	wantRet(t, "Free twice", s.Free(), nvml.ERROR_INVALID_ARGUMENT)
	wantRet(t, "RegisterEvents(freed)", d.RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.ERROR_INVALID_ARGUMENT)
	if _, r := s.Wait(10); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("Wait on a freed set: %v", r)
	}
}

func TestWaitReturnsPromptly(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-a100")
	s := createEventSet(t, lib)
	wantRet(t, "RegisterEvents", handle(t, lib, 0).RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.SUCCESS)

	type result struct {
		e nvml.EventData
		r nvml.Return
	}
	got := make(chan result)
	start := time.Now()
	go func() {
		e, r := s.Wait(60_000)
		got <- result{e, r}
	}()
	if err := m.InjectXID(0, 94); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.r != nvml.SUCCESS || res.e.EventData != 94 {
		t.Errorf("Wait = %+v %v", res.e, res.r)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("Wait did not return when the event arrived")
	}

	go func() {
		e, r := s.Wait(60_000)
		got <- result{e, r}
	}()
	wantRet(t, "Free", s.Free(), nvml.SUCCESS)
	if res := <-got; res.r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("Wait across Free returned %v", res.r)
	}

	s2 := createEventSet(t, lib)
	go func() {
		e, r := s2.Wait(60_000)
		got <- result{e, r}
	}()
	wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS)
	if res := <-got; res.r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("Wait across the last Shutdown returned %v", res.r)
	}
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	if time.Since(start) > 30*time.Second {
		t.Errorf("waiters were not woken promptly")
	}
}
