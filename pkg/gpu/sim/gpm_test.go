package sim

import (
	"math"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

var gpmMetrics = []nvml.GpmMetricId{
	nvml.GPM_METRIC_GRAPHICS_UTIL, nvml.GPM_METRIC_SM_UTIL, nvml.GPM_METRIC_ANY_TENSOR_UTIL, nvml.GPM_METRIC_DRAM_BW_UTIL,
	nvml.GPM_METRIC_PCIE_TX_PER_SEC, nvml.GPM_METRIC_PCIE_RX_PER_SEC,
	nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC,
	nvml.GPM_METRIC_FP64_UTIL,
}

func alloc(t *testing.T, lib nvml.Interface) nvml.GpmSample {
	t.Helper()
	s, r := lib.GpmSampleAlloc()
	wantRet(t, "GpmSampleAlloc", r, nvml.SUCCESS)
	t.Cleanup(func() { wantRet(t, "GpmSampleFree", s.Free(), nvml.SUCCESS) })
	return s
}

// metrics runs GpmMetricsGet for gpmMetrics and returns value and return per metric.
func metrics(t *testing.T, lib nvml.Interface, s1, s2 nvml.GpmSample) map[nvml.GpmMetricId]float64 {
	t.Helper()
	g := &nvml.GpmMetricsGetType{NumMetrics: uint32(len(gpmMetrics)), Sample1: s1, Sample2: s2}
	for i, id := range gpmMetrics {
		g.Metrics[i].MetricId = uint32(id)
	}
	wantRet(t, "GpmMetricsGet", lib.GpmMetricsGet(g), nvml.SUCCESS)
	if g.Version != nvml.GPM_METRICS_GET_VERSION {
		t.Errorf("Version %d", g.Version)
	}
	out := map[nvml.GpmMetricId]float64{}
	for i, id := range gpmMetrics {
		if r := nvml.Return(g.Metrics[i].NvmlReturn); r != nvml.SUCCESS {
			out[id] = -float64(r)
			continue
		}
		out[id] = g.Metrics[i].Value
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestGPMMatchesLoad(t *testing.T) {
	m, lib, clk := newMachine(t, "dgx-h100")
	d := handle(t, lib, 0)
	sup, r := lib.GpmQueryDeviceSupport(d)
	if r != nvml.SUCCESS || sup.IsSupportedDevice != 1 || sup.Version != nvml.GPM_SUPPORT_VERSION {
		t.Fatalf("GpmQueryDeviceSupport = %+v %v", sup, r)
	}
	const mib = 1 << 20
	if err := m.SetLoad(0, Load{SMActive: 0.6, TensorActive: 0.3, DRAMActive: 0.4,
		PCIeTxBytesPerS: 100 * mib, PCIeRxBytesPerS: 50 * mib, NVLinkTxBytesPerS: 1024 * mib, NVLinkRxBytesPerS: 512 * mib}); err != nil {
		t.Fatal(err)
	}
	s1, s2 := alloc(t, lib), alloc(t, lib)
	wantRet(t, "GpmSampleGet", lib.GpmSampleGet(d, s1), nvml.SUCCESS)
	clk.SetTime(epoch.Add(time.Second))
	if err := m.SetLoad(0, Load{}); err != nil { // idle for the second half
		t.Fatal(err)
	}
	clk.SetTime(epoch.Add(2 * time.Second))
	wantRet(t, "GpmSampleGet", d.GpmSampleGet(s2), nvml.SUCCESS)
	got := metrics(t, lib, s1, s2)
	want := map[nvml.GpmMetricId]float64{
		nvml.GPM_METRIC_GRAPHICS_UTIL: 30, nvml.GPM_METRIC_SM_UTIL: 30, nvml.GPM_METRIC_ANY_TENSOR_UTIL: 15,
		nvml.GPM_METRIC_DRAM_BW_UTIL: 20, nvml.GPM_METRIC_PCIE_TX_PER_SEC: 50, nvml.GPM_METRIC_PCIE_RX_PER_SEC: 25,
		nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: 512, nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: 256,
		nvml.GPM_METRIC_FP64_UTIL: -float64(nvml.ERROR_NOT_SUPPORTED),
	}
	for id, w := range want {
		if !near(got[id], w) {
			t.Errorf("metric %d = %v, want %v", id, got[id], w)
		}
	}
	// The same instant gives zeros, not a division by zero.
	wantRet(t, "sample.Get", s1.Get(d), nvml.SUCCESS)
	if z := metrics(t, lib, s1, s2); z[nvml.GPM_METRIC_SM_UTIL] != 0 {
		t.Errorf("zero interval gave %v", z[nvml.GPM_METRIC_SM_UTIL])
	}
}

func TestGPMPerGPUInstance(t *testing.T) {
	m, lib, d := newMIGEnabledGPU(t, "dgx-b200", 1)
	clk := m.clock.(interface{ SetTime(time.Time) })
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_3_SLICE, 0) // GI 1
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE, 4) // GI 11
	if err := m.SetMIGLoad(1, 1, Load{SMActive: 0.8, TensorActive: 0.5}); err != nil {
		t.Fatal(err)
	}
	g1, g2 := alloc(t, lib), alloc(t, lib)
	p1, p2 := alloc(t, lib), alloc(t, lib)
	h1, h2 := alloc(t, lib), alloc(t, lib)
	o1, o2 := alloc(t, lib), alloc(t, lib)
	mig, _ := d.GetMigDeviceHandleByIndex(0) // GI 1
	wantRet(t, "GpmMigSampleGet", lib.GpmMigSampleGet(d, 1, g1), nvml.SUCCESS)
	wantRet(t, "GpmSampleGet", lib.GpmSampleGet(d, p1), nvml.SUCCESS)
	wantRet(t, "GpmSampleGet(MIG)", lib.GpmSampleGet(mig, h1), nvml.SUCCESS)
	wantRet(t, "MigGet", o1.MigGet(d, 11), nvml.SUCCESS)
	clk.SetTime(epoch.Add(5 * time.Second))
	wantRet(t, "GpmMigSampleGet", d.GpmMigSampleGet(1, g2), nvml.SUCCESS)
	wantRet(t, "GpmSampleGet", lib.GpmSampleGet(d, p2), nvml.SUCCESS)
	wantRet(t, "GpmSampleGet(MIG)", mig.GpmSampleGet(h2), nvml.SUCCESS)
	wantRet(t, "MigGet", lib.GpmMigSampleGet(d, 11, o2), nvml.SUCCESS)

	if got := metrics(t, lib, g1, g2); !near(got[nvml.GPM_METRIC_SM_UTIL], 80) || !near(got[nvml.GPM_METRIC_ANY_TENSOR_UTIL], 50) {
		t.Errorf("GPU instance metrics %v", got)
	}
	if got := metrics(t, lib, h1, h2); !near(got[nvml.GPM_METRIC_SM_UTIL], 80) {
		t.Errorf("MIG device metrics %v", got)
	}
	if got := metrics(t, lib, o1, o2); got[nvml.GPM_METRIC_SM_UTIL] != 0 {
		t.Errorf("idle GPU instance metrics %v", got)
	}
	if got := metrics(t, lib, p1, p2); !near(got[nvml.GPM_METRIC_SM_UTIL], 80*3.0/7) {
		t.Errorf("whole-GPU metrics %v, want SM %v", got, 80*3.0/7)
	}
	if r := lib.GpmMigSampleGet(d, 2, g1); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("missing GPU instance: %v", r)
	}
	g := &nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: g1, Sample2: p2}
	if r := lib.GpmMetricsGet(g); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("samples of different scopes: %v", r)
	}
}

func TestGPMRefusals(t *testing.T) {
	_, lib, _ := newMachine(t, "dgx-a100")
	a100 := handle(t, lib, 0)
	sup, r := a100.GpmQueryDeviceSupport()
	if r != nvml.SUCCESS || sup.IsSupportedDevice != 0 {
		t.Errorf("A100 GPM support %+v %v", sup, r)
	}
	s := alloc(t, lib)
	if r := lib.GpmSampleGet(a100, s); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GpmSampleGet on an A100: %v", r)
	}

	_, hlib, _ := newMachine(t, "dgx-h100")
	h0, h1 := handle(t, hlib, 0), handle(t, hlib, 1)
	s1, s2 := alloc(t, hlib), alloc(t, hlib)
	free, r := hlib.GpmSampleAlloc() // freed by the test itself, not by alloc's cleanup
	wantRet(t, "GpmSampleAlloc", r, nvml.SUCCESS)
	wantRet(t, "GpmSampleGet", h0.GpmSampleGet(s1), nvml.SUCCESS)
	wantRet(t, "GpmSampleGet", h1.GpmSampleGet(s2), nvml.SUCCESS)
	if r := hlib.GpmMetricsGet(&nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: s1, Sample2: s2}); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("samples of different GPUs: %v", r)
	}
	if r := hlib.GpmMetricsGet(&nvml.GpmMetricsGetType{NumMetrics: 0, Sample1: s1, Sample2: s1}); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("no metrics: %v", r)
	}
	if r := hlib.GpmMetricsGet(&nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: s1, Sample2: free}); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("sample never taken: %v", r)
	}
	if r := hlib.GpmMigSampleGet(h0, 0, s1); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("GpmMigSampleGet without MIG: %v", r)
	}
	wantRet(t, "GpmSampleFree", hlib.GpmSampleFree(free), nvml.SUCCESS)
	if r := h0.GpmSampleGet(free); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("GpmSampleGet into a freed sample: %v", r)
	}
	if r := hlib.GpmSampleGet(h0, nil); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("GpmSampleGet(nil): %v", r)
	}
}
