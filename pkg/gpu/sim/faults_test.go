package sim

import (
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestInitFault(t *testing.T) {
	m, err := Open("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	lib := m.NVML()
	m.InjectFault(Fault{GPU: -1, Call: "Init", Return: nvml.ERROR_DRIVER_NOT_LOADED})
	wantRet(t, "Init", lib.Init(), nvml.ERROR_DRIVER_NOT_LOADED)
	wantRet(t, "Init", lib.Init(), nvml.ERROR_DRIVER_NOT_LOADED)
	if _, r := lib.DeviceGetCount(); r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("DeviceGetCount after a failed Init: %v", r)
	}
	m.ClearFaults()
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	defer func() { wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS) }()
	if got := m.Calls("Init"); got != 3 {
		t.Errorf("Calls(Init) = %d, want 3", got)
	}
}

func TestFaults(t *testing.T) {
	type probe struct {
		name string
		call func(lib nvml.Interface) nvml.Return
		want nvml.Return
	}
	temp := func(gpu int) func(nvml.Interface) nvml.Return {
		return func(lib nvml.Interface) nvml.Return {
			d, r := lib.DeviceGetHandleByIndex(gpu)
			if r != nvml.SUCCESS {
				return r
			}
			_, r = d.GetTemperature(nvml.TEMPERATURE_GPU)
			return r
		}
	}
	count := func(lib nvml.Interface) nvml.Return { _, r := lib.DeviceGetCount(); return r }
	tests := []struct {
		name   string
		faults []Fault
		probes []probe
	}{
		{
			name:   "one call on one GPU, twice",
			faults: []Fault{{GPU: 2, Call: "GetTemperature", Return: nvml.ERROR_UNKNOWN, Times: 2}},
			probes: []probe{
				{"gpu 2", temp(2), nvml.ERROR_UNKNOWN},
				{"gpu 1", temp(1), nvml.SUCCESS},
				{"gpu 2 again", temp(2), nvml.ERROR_UNKNOWN},
				{"gpu 2 cleared", temp(2), nvml.SUCCESS},
			},
		},
		{
			name:   "every call on one GPU",
			faults: []Fault{{GPU: 1, Return: nvml.ERROR_TIMEOUT}},
			probes: []probe{
				{"handle", temp(1), nvml.ERROR_TIMEOUT},
				{"other gpu", temp(0), nvml.SUCCESS},
				{"system call", count, nvml.SUCCESS},
			},
		},
		{
			name:   "one call anywhere",
			faults: []Fault{{GPU: -1, Call: "GetTemperature", Return: nvml.ERROR_NO_PERMISSION}},
			probes: []probe{
				{"gpu 0", temp(0), nvml.ERROR_NO_PERMISSION},
				{"gpu 7", temp(7), nvml.ERROR_NO_PERMISSION},
				{"system call", count, nvml.SUCCESS},
			},
		},
		{
			name:   "every call",
			faults: []Fault{{GPU: -1, Return: nvml.ERROR_UNKNOWN, Times: 1}},
			probes: []probe{
				{"system call", count, nvml.ERROR_UNKNOWN},
				{"then fine", count, nvml.SUCCESS},
			},
		},
		{
			name:   "unmodelled call",
			faults: []Fault{{GPU: 0, Call: "GetSerial", Return: nvml.ERROR_TIMEOUT}},
			probes: []probe{
				{"GetSerial", func(lib nvml.Interface) nvml.Return {
					d, _ := lib.DeviceGetHandleByIndex(0)
					_, r := d.GetSerial()
					return r
				}, nvml.ERROR_TIMEOUT},
			},
		},
		{
			name:   "event wait",
			faults: []Fault{{GPU: -1, Call: "EventSetWait", Return: nvml.ERROR_GPU_IS_LOST}},
			probes: []probe{
				{"Wait", func(lib nvml.Interface) nvml.Return {
					s, _ := lib.EventSetCreate()
					defer func() { _ = s.Free() }()
					_, r := s.Wait(1000)
					return r
				}, nvml.ERROR_GPU_IS_LOST},
			},
		},
		{
			name:   "first matching rule wins",
			faults: []Fault{{GPU: 3, Call: "GetTemperature", Return: nvml.ERROR_UNKNOWN}, {GPU: -1, Return: nvml.ERROR_TIMEOUT}},
			probes: []probe{
				{"count", count, nvml.ERROR_TIMEOUT},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, lib, _ := newMachine(t, "dgx-h100")
			for _, f := range tt.faults {
				m.InjectFault(f)
			}
			for _, p := range tt.probes {
				if got := p.call(lib); got != p.want {
					t.Errorf("%s: got %v, want %v", p.name, got, p.want)
				}
			}
			m.ClearFaults()
		})
	}
}

func TestFaultsOnMIGInstances(t *testing.T) {
	m, _, d := newMIGEnabledGPU(t, "dgx-a100", 4)
	gi, ci := createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_2_SLICE, 0)
	wantRet(t, "destroy CI", ci.Destroy(), nvml.SUCCESS)
	m.InjectFault(Fault{GPU: 4, Call: "GpuInstanceDestroy", Return: nvml.ERROR_IN_USE, Times: 1})
	wantRet(t, "destroy GI (fault)", gi.Destroy(), nvml.ERROR_IN_USE)
	wantRet(t, "destroy GI", gi.Destroy(), nvml.SUCCESS)
	if m.Calls("GpuInstanceDestroy") != 2 || m.Calls("ComputeInstanceDestroy") != 1 {
		t.Errorf("calls %d %d", m.Calls("GpuInstanceDestroy"), m.Calls("ComputeInstanceDestroy"))
	}
}

func TestLoseAndRecoverGPU(t *testing.T) {
	m, lib, d := newMIGEnabledGPU(t, "dgx-h100", 5)
	gi, _ := createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE, 0)
	mig, _ := d.GetMigDeviceHandleByIndex(0)
	other := handle(t, lib, 4)
	s := createEventSet(t, lib)
	wantRet(t, "RegisterEvents", d.RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.SUCCESS)

	if err := m.LoseGPU(5); err != nil {
		t.Fatal(err)
	}
	lost := []struct {
		name string
		ret  nvml.Return
	}{
		{"GetName", func() nvml.Return { _, r := d.GetName(); return r }()},
		{"GetPowerUsage", func() nvml.Return { _, r := d.GetPowerUsage(); return r }()},
		{"GetSerial (unmodelled)", func() nvml.Return { _, r := d.GetSerial(); return r }()},
		{"DeviceGetHandleByIndex", func() nvml.Return { _, r := lib.DeviceGetHandleByIndex(5); return r }()},
		{"MIG device", func() nvml.Return { _, r := mig.GetUUID(); return r }()},
		{"GPU instance", func() nvml.Return { _, r := gi.GetInfo(); return r }()},
		{"topology towards it", func() nvml.Return { _, r := other.GetTopologyCommonAncestor(d); return r }()},
	}
	for _, l := range lost {
		if l.ret != nvml.ERROR_GPU_IS_LOST {
			t.Errorf("%s on a lost GPU: %v", l.name, l.ret)
		}
	}
	if n, r := lib.DeviceGetCount(); r != nvml.SUCCESS || n != 8 {
		t.Errorf("DeviceGetCount = %d %v", n, r)
	}
	if _, r := other.GetName(); r != nvml.SUCCESS {
		t.Errorf("another GPU: %v", r)
	}
	if e, r := s.Wait(1000); r != nvml.SUCCESS || e.EventData != 79 || e.Device != d {
		t.Errorf("event %+v %v, want XID 79", e, r)
	}
	if err := m.RecoverGPU(5); err != nil {
		t.Fatal(err)
	}
	if name, r := d.GetName(); r != nvml.SUCCESS || name != "NVIDIA H100 80GB HBM3" {
		t.Errorf("after recovery GetName = %q %v", name, r)
	}
	if _, r := mig.GetUUID(); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("MIG device survived the reset: %v", r)
	}
	if cur, _, _ := d.GetMigMode(); cur != nvml.DEVICE_MIG_ENABLE {
		t.Errorf("MIG mode lost on reset")
	}
	for _, err := range []error{m.LoseGPU(8), m.RecoverGPU(-1)} {
		if err == nil {
			t.Errorf("unknown GPU accepted")
		}
	}
}

// TestConcurrentUse exercises the machine from many goroutines; run with -race.
func TestConcurrentUse(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-h100")
	s := createEventSet(t, lib)
	for i := range 8 {
		wantRet(t, "RegisterEvents", handle(t, lib, i).RegisterEvents(nvml.EventTypeXidCriticalError, s), nvml.SUCCESS)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _ := lib.DeviceGetHandleByIndex(g)
			sample, _ := lib.GpmSampleAlloc()
			defer func() { _ = sample.Free() }()
			// Results are ignored: this test is about data races, not values.
			for i := range 50 {
				_ = m.SetLoad(g, Load{SMActive: float64(i%10) / 10})
				_, _ = d.GetPowerUsage()
				_, _ = d.GetMemoryInfo_v2()
				_, _ = d.GetTotalEnergyConsumption()
				_ = d.GpmSampleGet(sample)
				_ = m.InjectXID(g, uint64(i))
				if g%2 == 0 {
					_, _ = d.SetMigMode(i % 2)
					info, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
					if gi, r := d.CreateGpuInstance(&info); r == nvml.SUCCESS {
						_ = gi.Destroy()
					}
				}
				m.Calls("GetPowerUsage")
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 400 {
			if _, r := s.Wait(100); r != nvml.SUCCESS {
				return
			}
		}
	}()
	wg.Wait()
	if got := m.Calls("GetPowerUsage"); got != 400 {
		t.Errorf("Calls(GetPowerUsage) = %d, want 400", got)
	}
}
