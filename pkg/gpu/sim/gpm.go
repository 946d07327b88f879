package sim

import (
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// gpmSample is a GPM sample buffer: the time it was taken and the cumulative
// activity of a GPU or GPU instance at that time.
type gpmSample struct {
	m *Machine

	// Guarded by m.mu.
	freed bool
	taken bool
	dev   *device
	gi    *gpuInstance // nil for a whole-GPU sample
	at    time.Time
	acc   activity
}

var _ nvml.GpmSample = (*gpmSample)(nil)

// Free frees the sample.
func (s *gpmSample) Free() nvml.Return {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.enter(-1, "GpmSampleFree"); r != nvml.SUCCESS {
		return r
	}
	if s.freed {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	s.freed = true
	return nvml.SUCCESS
}

// Get takes a sample of device.
func (s *gpmSample) Get(device nvml.Device) nvml.Return {
	return s.m.gpmSampleGet(device, s, -1, false, "GpmSampleGet")
}

// MigGet takes a sample of GPU instance gi of device.
func (s *gpmSample) MigGet(device nvml.Device, gi int) nvml.Return {
	return s.m.gpmSampleGet(device, s, gi, true, "GpmMigSampleGet")
}

// GpmSampleGet takes a GPM sample of the GPU.
func (d *device) GpmSampleGet(s nvml.GpmSample) nvml.Return {
	return d.m.gpmSampleGet(d, s, -1, false, "GpmSampleGet")
}

// GpmMigSampleGet takes a GPM sample of GPU instance gi.
func (d *device) GpmMigSampleGet(gi int, s nvml.GpmSample) nvml.Return {
	return d.m.gpmSampleGet(d, s, gi, true, "GpmMigSampleGet")
}

// GpmQueryDeviceSupport reports GPM support: Hopper and newer.
func (d *device) GpmQueryDeviceSupport() (nvml.GpmSupport, nvml.Return) {
	r, unlock := d.begin("GpmQueryDeviceSupport")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.GpmSupport{}, r
	}
	return gpmSupport(d.model), nvml.SUCCESS
}

func gpmSupport(md *model) nvml.GpmSupport {
	s := nvml.GpmSupport{Version: nvml.GPM_SUPPORT_VERSION}
	if md.gpm {
		s.IsSupportedDevice = 1
	}
	return s
}

// GpmSampleGet takes a GPM sample of the MIG device's GPU instance.
func (h *migDevice) GpmSampleGet(s nvml.GpmSample) nvml.Return {
	return h.ci.gi.d.m.gpmSampleGet(h, s, -1, false, "GpmSampleGet")
}

// GpmQueryDeviceSupport reports the parent's GPM support.
func (h *migDevice) GpmQueryDeviceSupport() (nvml.GpmSupport, nvml.Return) {
	r, unlock := h.begin("GpmQueryDeviceSupport")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.GpmSupport{}, r
	}
	return gpmSupport(h.ci.gi.d.model), nvml.SUCCESS
}

// gpmSampleGet fills sample for handle (a GPU or MIG device); with mig it
// samples GPU instance giID of a GPU.
func (m *Machine) gpmSampleGet(handle nvml.Device, sample nvml.GpmSample, giID int, mig bool, call string) nvml.Return {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d *device
	var handleGI *gpuInstance
	stale := false
	switch h := handle.(type) {
	case *device:
		if h.m == m {
			d = h
		}
	case *migDevice:
		if h.ci.gi.d.m == m {
			d, handleGI, stale = h.ci.gi.d, h.ci.gi, h.ci.destroyed
		}
	}
	gpu := -1
	if d != nil {
		gpu = d.index
	}
	if r := m.enter(gpu, call); r != nvml.SUCCESS {
		return r
	}
	s, ok := sample.(*gpmSample)
	if d == nil || stale || !ok || s.m != m || s.freed || (mig && handleGI != nil) {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if !d.model.gpm {
		return nvml.ERROR_NOT_SUPPORTED
	}
	gi := handleGI
	if mig {
		if !d.migEnabled() {
			return nvml.ERROR_NOT_SUPPORTED
		}
		if gi, ok = d.gis[uint32(giID)]; !ok || giID < 0 {
			return nvml.ERROR_NOT_FOUND
		}
	}
	now := m.clock.Now()
	d.advance(now)
	s.taken, s.dev, s.gi, s.at = true, d, gi, now
	if gi != nil {
		s.acc = gi.meter.acc
	} else {
		s.acc = d.meter.acc
	}
	return nvml.SUCCESS
}

// gpmMetricsGet computes g's metrics over [Sample1, Sample2]: utilisations in
// percent, PCIe and NVLink rates in MiB/s. Metrics the simulation does not
// model get NvmlReturn ERROR_NOT_SUPPORTED. Samples taken at the same instant
// give zeros.
func (m *Machine) gpmMetricsGet(g *nvml.GpmMetricsGetType) nvml.Return {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s1, s2 *gpmSample
	gpu := -1
	if g != nil {
		s1, _ = g.Sample1.(*gpmSample)
		s2, _ = g.Sample2.(*gpmSample)
		if s1 != nil && s1.dev != nil {
			gpu = s1.dev.index
		}
	}
	if r := m.enter(gpu, "GpmMetricsGet"); r != nvml.SUCCESS {
		return r
	}
	if g == nil || s1 == nil || s2 == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	g.Version = nvml.GPM_METRICS_GET_VERSION
	valid := func(s *gpmSample) bool { return s.m == m && !s.freed && s.taken }
	if g.NumMetrics == 0 || int(g.NumMetrics) > len(g.Metrics) || !valid(s1) || !valid(s2) || s1.dev != s2.dev || s1.gi != s2.gi {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	dt := s2.at.Sub(s1.at).Seconds()
	delta := s2.acc.add(scale(s1.acc, -1), 1)
	rate := func(x float64) float64 {
		if dt <= 0 {
			return 0
		}
		return x / dt
	}
	pct := func(x float64) float64 { return min(max(rate(x)*100, 0), 100) }
	mib := func(x float64) float64 { return max(rate(x), 0) / (1 << 20) }
	for i := range g.NumMetrics {
		mt := &g.Metrics[i]
		ret, v := nvml.SUCCESS, 0.0
		switch nvml.GpmMetricId(mt.MetricId) {
		case nvml.GPM_METRIC_GRAPHICS_UTIL:
			v = pct(delta.gr)
		case nvml.GPM_METRIC_SM_UTIL:
			v = pct(delta.sm)
		case nvml.GPM_METRIC_ANY_TENSOR_UTIL:
			v = pct(delta.tensor)
		case nvml.GPM_METRIC_DRAM_BW_UTIL:
			v = pct(delta.dram)
		case nvml.GPM_METRIC_PCIE_TX_PER_SEC:
			v = mib(delta.pcieTx)
		case nvml.GPM_METRIC_PCIE_RX_PER_SEC:
			v = mib(delta.pcieRx)
		case nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, nvml.GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC:
			if s1.dev.model.nvlinks == 0 {
				ret = nvml.ERROR_NOT_SUPPORTED
			} else if nvml.GpmMetricId(mt.MetricId) == nvml.GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC {
				v = mib(delta.nvlTx)
			} else {
				v = mib(delta.nvlRx)
			}
		default:
			ret = nvml.ERROR_NOT_SUPPORTED
		}
		mt.NvmlReturn, mt.Value = uint32(ret), v
	}
	return nvml.SUCCESS
}
