package sim

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

type reading struct {
	powerMW, tempC, smMHz, memMHz, gpuUtil, memUtil, enc, dec uint32
	reasons                                                   uint64
}

func read(t *testing.T, d nvml.Device) reading {
	t.Helper()
	var rd reading
	var r nvml.Return
	rd.powerMW, r = d.GetPowerUsage()
	wantRet(t, "GetPowerUsage", r, nvml.SUCCESS)
	rd.tempC, r = d.GetTemperature(nvml.TEMPERATURE_GPU)
	wantRet(t, "GetTemperature", r, nvml.SUCCESS)
	rd.smMHz, r = d.GetClockInfo(nvml.CLOCK_SM)
	wantRet(t, "GetClockInfo", r, nvml.SUCCESS)
	rd.memMHz, _ = d.GetClockInfo(nvml.CLOCK_MEM)
	u, r := d.GetUtilizationRates()
	wantRet(t, "GetUtilizationRates", r, nvml.SUCCESS)
	rd.gpuUtil, rd.memUtil = u.Gpu, u.Memory
	rd.enc, _, _ = d.GetEncoderUtilization()
	rd.dec, _, _ = d.GetDecoderUtilization()
	rd.reasons, r = d.GetCurrentClocksEventReasons()
	wantRet(t, "GetCurrentClocksEventReasons", r, nvml.SUCCESS)
	return rd
}

func TestTelemetryFollowsLoad(t *testing.T) {
	// H100: idle 70 W, TDP 700 W, SM 345..1980 MHz, memory 2619 MHz.
	tests := []struct {
		name string
		load Load
		want reading
	}{
		{"idle", Load{}, reading{powerMW: 70000, tempC: 30, smMHz: 345, memMHz: 2619, reasons: nvml.ClocksEventReasonGpuIdle}},
		{"half", Load{SMActive: 0.5, TensorActive: 0.2, MemCopyUtil: 0.3, EncoderUtil: 0.1, DecoderUtil: 0.25},
			reading{powerMW: 385000, tempC: 55, smMHz: 1163, memMHz: 2619, gpuUtil: 50, memUtil: 30, enc: 10, dec: 25, reasons: nvml.ClocksEventReasonNone}},
		{"tensor bound", Load{SMActive: 0.4, TensorActive: 0.95},
			reading{powerMW: 668500, tempC: 78, smMHz: 1898, memMHz: 2619, gpuUtil: 40, reasons: nvml.ClocksEventReasonSwPowerCap}},
		{"full", Load{SMActive: 1, TensorActive: 1, DRAMActive: 1, MemCopyUtil: 1},
			reading{powerMW: 700000, tempC: 80, smMHz: 1980, memMHz: 2619, gpuUtil: 100, memUtil: 100, reasons: nvml.ClocksEventReasonSwPowerCap}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, lib, _ := newMachine(t, "dgx-h100")
			if err := m.SetLoad(4, tt.load); err != nil {
				t.Fatal(err)
			}
			if got := read(t, handle(t, lib, 4)); got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if got := read(t, handle(t, lib, 3)); got.powerMW != 70000 {
				t.Errorf("load leaked to another GPU: %+v", got)
			}
		})
	}
}

func TestGDDRMemoryClockIdles(t *testing.T) {
	m, lib, _ := newMachine(t, "pcie-4xl40s")
	d := handle(t, lib, 0)
	if mhz, _ := d.GetClockInfo(nvml.CLOCK_MEM); mhz != 405 {
		t.Errorf("idle memory clock %d", mhz)
	}
	if err := m.SetLoad(0, Load{SMActive: 0.1}); err != nil {
		t.Fatal(err)
	}
	if mhz, _ := d.GetClockInfo(nvml.CLOCK_MEM); mhz != 9001 {
		t.Errorf("busy memory clock %d", mhz)
	}
	if mhz, _ := d.GetMaxClockInfo(nvml.CLOCK_SM); mhz != 2520 {
		t.Errorf("max SM clock %d", mhz)
	}
	if _, r := d.GetClockInfo(nvml.CLOCK_COUNT); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("CLOCK_COUNT: %v", r)
	}
	if _, r := d.GetTemperature(nvml.TEMPERATURE_GPU_MAX); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("TEMPERATURE_GPU_MAX: %v", r)
	}
}

func TestEnergyIntegratesPowerOverTheClock(t *testing.T) {
	m, lib, clk := newMachine(t, "dgx-a100") // idle 55 W, TDP 400 W
	d := handle(t, lib, 0)
	energy := func() uint64 {
		t.Helper()
		e, r := d.GetTotalEnergyConsumption()
		wantRet(t, "GetTotalEnergyConsumption", r, nvml.SUCCESS)
		return e
	}
	if e := energy(); e != 0 {
		t.Fatalf("energy at start %d mJ", e)
	}
	clk.SetTime(epoch.Add(10 * time.Second))
	if e := energy(); e != 550_000 {
		t.Errorf("10 s idle: %d mJ, want 550000", e)
	}
	if err := m.SetLoad(0, Load{SMActive: 1}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(epoch.Add(12 * time.Second))
	if e := energy(); e != 550_000+800_000 {
		t.Errorf("then 2 s at 400 W: %d mJ, want 1350000", e)
	}
	if err := m.SetLoad(0, Load{SMActive: 0.5}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(epoch.Add(14 * time.Second))
	if e := energy(); e != 1_350_000+2*227_500 {
		t.Errorf("then 2 s at 227.5 W: %d mJ", e)
	}
	clk.SetTime(epoch.Add(13 * time.Second)) // a clock going back changes nothing
	if e := energy(); e != 1_805_000 {
		t.Errorf("after the clock went back: %d mJ", e)
	}
}

func TestMemoryAndProcesses(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-h100")
	d := handle(t, lib, 1)
	const total = 81559
	reserved := uint64(total * 6 / 1000)
	if err := m.SetLoad(1, Load{SMActive: 0.3, Processes: []Process{{PID: 100, UsedMemoryMiB: 1000}, {PID: 200, UsedMemoryMiB: 3000}}}); err != nil {
		t.Fatal(err)
	}
	v1, _ := d.GetMemoryInfo()
	if v1.Total != total<<20 || v1.Used != (reserved+4000)<<20 || v1.Free != v1.Total-v1.Used {
		t.Errorf("GetMemoryInfo = %+v", v1)
	}
	v2, _ := d.GetMemoryInfo_v2()
	if v2.Reserved != reserved<<20 || v2.Used != 4000<<20 || v2.Free != v2.Total-v2.Reserved-v2.Used || v2.Version == 0 {
		t.Errorf("GetMemoryInfo_v2 = %+v", v2)
	}
	if float64(v2.Reserved)/float64(v2.Total) < 0.005 || float64(v2.Reserved)/float64(v2.Total) > 0.007 {
		t.Errorf("reserved is %.2f%% of the memory", 100*float64(v2.Reserved)/float64(v2.Total))
	}
	ps, r := d.GetComputeRunningProcesses()
	wantRet(t, "GetComputeRunningProcesses", r, nvml.SUCCESS)
	if len(ps) != 2 || ps[1].Pid != 200 || ps[1].UsedGpuMemory != 3000<<20 || ps[0].GpuInstanceId != math.MaxUint32 || ps[0].ComputeInstanceId != math.MaxUint32 {
		t.Errorf("processes %+v", ps)
	}
}

func TestSetLoadErrors(t *testing.T) {
	m, err := Open("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		gpu     int
		load    Load
		wantErr string
	}{
		{"unknown gpu", 8, Load{}, "valid indices 0..7"},
		{"negative gpu", -1, Load{}, "no such GPU"},
		{"fraction above one", 0, Load{SMActive: 1.5}, "SMActive must be within 0..1"},
		{"NaN", 0, Load{DRAMActive: math.NaN()}, "DRAMActive"},
		{"negative rate", 0, Load{PCIeTxBytesPerS: -1}, "PCIeTxBytesPerS"},
		{"too much memory", 0, Load{Processes: []Process{{PID: 1, UsedMemoryMiB: 81100}}}, "81100 MiB"},
		{"duplicate pid", 0, Load{Processes: []Process{{PID: 1}, {PID: 1}}}, "listed twice"},
		{"MIG process", 0, Load{Processes: []Process{{PID: 1, GPUInstanceID: 3}}}, "SetMIGLoad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.SetLoad(tt.gpu, tt.load)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SetLoad = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := m.SetMIGLoad(0, 1, Load{}); err == nil || !strings.Contains(err.Error(), "no such GPU instance") {
		t.Errorf("SetMIGLoad on a missing instance: %v", err)
	}
}

func TestMIGLoad(t *testing.T) {
	m, _, d := newMIGEnabledGPU(t, "dgx-h100", 0)
	gi, ci := createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_3_SLICE, 4) // GI 2, 40448 MiB
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE, 0)           // GI 7
	if err := m.SetMIGLoad(0, 2, Load{SMActive: 1, Processes: []Process{{PID: 7, UsedMemoryMiB: 2048}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMIGLoad(0, 2, Load{Processes: []Process{{PID: 8, UsedMemoryMiB: 50000, GPUInstanceID: -1, ComputeInstanceID: -1}}}); err == nil {
		t.Errorf("SetMIGLoad accepted more memory than the instance has")
	}
	if err := m.SetMIGLoad(0, 2, Load{Processes: []Process{{PID: 8, GPUInstanceID: -1, ComputeInstanceID: 5}}}); err == nil {
		t.Errorf("SetMIGLoad accepted a missing compute instance")
	}
	if _, r := d.GetUtilizationRates(); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GetUtilizationRates in MIG mode: %v", r)
	}
	// 3 of 7 compute slices fully busy.
	if p, _ := d.GetPowerUsage(); p != 70000+uint32(math.Round(630000*3.0/7)) {
		t.Errorf("power %d mW", p)
	}
	ps, _ := d.GetComputeRunningProcesses()
	if len(ps) != 1 || ps[0].GpuInstanceId != 2 || ps[0].ComputeInstanceId != 0 {
		t.Errorf("parent processes %+v", ps)
	}
	h, _ := d.GetMigDeviceHandleByIndex(0) // GI 2
	hm, _ := h.GetMemoryInfo()
	if hm.Total != 40448<<20 || hm.Used != 2048<<20 {
		t.Errorf("MIG memory %+v", hm)
	}
	if hps, _ := h.GetComputeRunningProcesses(); len(hps) != 1 || hps[0].Pid != 7 {
		t.Errorf("MIG processes %+v", hps)
	}
	other, _ := d.GetMigDeviceHandleByIndex(1)
	if ops, _ := other.GetComputeRunningProcesses(); len(ops) != 0 {
		t.Errorf("processes leaked into another MIG device: %+v", ops)
	}
	pm, _ := d.GetMemoryInfo()
	if pm.Used != (81559*6/1000+2048)<<20 {
		t.Errorf("parent memory used %d MiB", pm.Used>>20)
	}
	wantRet(t, "destroy CI with a process", ci.Destroy(), nvml.ERROR_IN_USE)
	if err := m.SetMIGLoad(0, 2, Load{SMActive: 0.2}); err != nil {
		t.Fatal(err)
	}
	wantRet(t, "destroy CI", ci.Destroy(), nvml.SUCCESS)
	if err := m.SetMIGLoad(0, 2, Load{Processes: []Process{{PID: 9, GPUInstanceID: -1, ComputeInstanceID: -1}}}); err == nil {
		t.Errorf("SetMIGLoad placed a process in an instance without compute instances")
	}
	wantRet(t, "destroy GI", gi.Destroy(), nvml.SUCCESS)
	if p, _ := d.GetPowerUsage(); p != 70000 {
		t.Errorf("power after the loaded instance went: %d mW", p)
	}
}

func fieldValue(t *testing.T, d nvml.Device, id, scope uint32) (uint64, nvml.Return) {
	t.Helper()
	vs := []nvml.FieldValue{{FieldId: id, ScopeId: scope}}
	wantRet(t, "GetFieldValues", d.GetFieldValues(vs), nvml.SUCCESS)
	v := vs[0]
	if nvml.Return(v.NvmlReturn) != nvml.SUCCESS {
		return 0, nvml.Return(v.NvmlReturn)
	}
	if nvml.ValueType(v.ValueType) == nvml.VALUE_TYPE_UNSIGNED_INT {
		return uint64(binary.NativeEndian.Uint32(v.Value[:4])), nvml.SUCCESS
	}
	return binary.NativeEndian.Uint64(v.Value[:]), nvml.SUCCESS
}

func TestFieldValues(t *testing.T) {
	m, lib, clk := newMachine(t, "dgx-h100")
	d := handle(t, lib, 0)
	if err := m.SetLoad(0, Load{SMActive: 1, DRAMActive: 0.5, NVLinkTxBytesPerS: 18 << 30, NVLinkRxBytesPerS: 9 << 30}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(epoch.Add(2 * time.Second))
	tests := []struct {
		name  string
		id    uint32
		scope uint32
		want  uint64
		ret   nvml.Return
	}{
		{"memory temperature", nvml.FI_DEV_MEMORY_TEMP, 0, 85, nvml.SUCCESS},
		{"nvlink tx, all links", nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, math.MaxUint32, 36 << 20, nvml.SUCCESS},
		{"nvlink rx, all links", nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, math.MaxUint32, 18 << 20, nvml.SUCCESS},
		{"nvlink tx, link 3", nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 3, 2 << 20, nvml.SUCCESS},
		{"nvlink tx, link 18", nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 18, 0, nvml.ERROR_INVALID_ARGUMENT},
		{"link count", nvml.FI_DEV_NVLINK_LINK_COUNT, 0, 18, nvml.SUCCESS},
		{"unknown field", nvml.FI_DEV_ENERGY, 0, 0, nvml.ERROR_NOT_SUPPORTED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, r := fieldValue(t, d, tt.id, tt.scope)
			if r != tt.ret || got != tt.want {
				t.Errorf("got %d %v, want %d %v", got, r, tt.want, tt.ret)
			}
		})
	}
	vs := []nvml.FieldValue{{FieldId: nvml.FI_DEV_MEMORY_TEMP}}
	wantRet(t, "GetFieldValues", d.GetFieldValues(vs), nvml.SUCCESS)
	if vs[0].Timestamp != epoch.Add(2*time.Second).UnixMicro() {
		t.Errorf("timestamp %d", vs[0].Timestamp)
	}
	if r := d.GetFieldValues(nil); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("GetFieldValues(nil) = %v", r)
	}
	_, lib2, _ := newMachine(t, "pcie-4xl40s")
	if _, r := fieldValue(t, handle(t, lib2, 0), nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, math.MaxUint32); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("NVLink counter on an L40S: %v", r)
	}
}

func TestECCAndReplays(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-a100")
	d := handle(t, lib, 5)
	for range 3 {
		if err := m.InjectECC(5, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.InjectECC(5, true); err != nil {
		t.Fatal(err)
	}
	if err := m.InjectPCIeReplays(5, 12); err != nil {
		t.Fatal(err)
	}
	counter := func(typ nvml.MemoryErrorType, c nvml.EccCounterType) uint64 {
		t.Helper()
		n, r := d.GetTotalEccErrors(typ, c)
		wantRet(t, "GetTotalEccErrors", r, nvml.SUCCESS)
		return n
	}
	check := func(cv, uv, ca, ua uint64) {
		t.Helper()
		got := [4]uint64{counter(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC), counter(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC),
			counter(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.AGGREGATE_ECC), counter(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC)}
		if got != [4]uint64{cv, uv, ca, ua} {
			t.Errorf("ECC counters %v, want %v", got, [4]uint64{cv, uv, ca, ua})
		}
	}
	check(3, 1, 3, 1)
	if corr, unc, pending, failed, r := d.GetRemappedRows(); r != nvml.SUCCESS || corr != 0 || unc != 0 || !pending || failed {
		t.Errorf("GetRemappedRows = %d %d %v %v %v", corr, unc, pending, failed, r)
	}
	if n, _ := d.GetPcieReplayCounter(); n != 12 {
		t.Errorf("replays %d", n)
	}
	if _, r := d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_COUNT, nvml.VOLATILE_ECC); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("MEMORY_ERROR_TYPE_COUNT: %v", r)
	}
	if err := m.ResetGPU(5); err != nil {
		t.Fatal(err)
	}
	check(0, 0, 3, 1)
	if _, unc, pending, _, _ := d.GetRemappedRows(); unc != 1 || pending {
		t.Errorf("after reset: %d remapped, pending %v", unc, pending)
	}

	m2, lib2, _ := newMachine(t, "ws-2xrtx4090")
	g := handle(t, lib2, 0)
	if _, r := g.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("ECC on an RTX 4090: %v", r)
	}
	if _, _, _, _, r := g.GetRemappedRows(); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("remapped rows on an RTX 4090: %v", r)
	}
	if err := m2.InjectECC(0, true); err == nil {
		t.Errorf("InjectECC on an RTX 4090 succeeded")
	}
}

func TestRemappedRowsInMIGMode(t *testing.T) {
	_, _, d := newMIGEnabledGPU(t, "dgx-h200", 0)
	if _, _, _, _, r := d.GetRemappedRows(); r != nvml.SUCCESS {
		t.Errorf("MIG enabled without instances: %v", r)
	}
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_7_SLICE, 0)
	if _, _, _, _, r := d.GetRemappedRows(); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("MIG instances present: %v", r)
	}
}
