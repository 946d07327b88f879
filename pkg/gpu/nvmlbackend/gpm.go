package nvmlbackend

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// gpmKey identifies a GPM stream: a whole GPU (gi = -1) or one GPU instance.
type gpmKey struct {
	uuid string
	gi   int
}

// gpmStream keeps the previous sample so the next pass can compute rates.
type gpmStream struct {
	prev, cur nvml.GpmSample
	hasPrev   bool
	seen      bool
}

// gpmState is the GPM bookkeeping carried between snapshots. Guarded by
// Backend.sampleMu.
type gpmState struct {
	streams map[gpmKey]*gpmStream
	support map[string]bool
	// req is reused across calls: it is large (hundreds of metric slots).
	req *nvml.GpmMetricsGetType
}

var gpmMetricIDs = [...]nvml.GpmMetricId{
	nvml.GPM_METRIC_GRAPHICS_UTIL,
	nvml.GPM_METRIC_SM_UTIL,
	nvml.GPM_METRIC_ANY_TENSOR_UTIL,
	nvml.GPM_METRIC_DRAM_BW_UTIL,
	nvml.GPM_METRIC_PCIE_TX_PER_SEC,
	nvml.GPM_METRIC_PCIE_RX_PER_SEC,
}

func (g *gpmState) supported(d nvml.Device, uuid string) bool {
	if g.support == nil {
		g.support = map[string]bool{}
	}
	if s, ok := g.support[uuid]; ok {
		return s
	}
	s, ret := d.GpmQueryDeviceSupport()
	ok := ret == nvml.SUCCESS && s.IsSupportedDevice != 0
	if ret != nvml.ERROR_GPU_IS_LOST {
		g.support[uuid] = ok
	}
	return ok
}

func (g *gpmState) beginPass() {
	for _, s := range g.streams {
		s.seen = false
	}
}

// endPass frees the samples of streams that vanished (destroyed MIG instances, lost GPUs).
func (g *gpmState) endPass() {
	for k, s := range g.streams {
		if !s.seen {
			s.release()
			delete(g.streams, k)
		}
	}
}

func (g *gpmState) free() {
	for k, s := range g.streams {
		s.release()
		delete(g.streams, k)
	}
}

func (s *gpmStream) release() {
	for _, x := range []nvml.GpmSample{s.prev, s.cur} {
		if x != nil {
			_ = x.Free() // nothing to do if the driver cannot free a sample
		}
	}
	s.prev, s.cur = nil, nil
}

// gpmRead takes a new GPM sample for key and returns the readings over the
// interval since the previous one (absent on the first).
func (b *Backend) gpmRead(r *reader, key gpmKey, get func(nvml.GpmSample) nvml.Return) gpu.GPMReadings {
	g := &b.gpm
	if g.streams == nil {
		g.streams = map[gpmKey]*gpmStream{}
	}
	s := g.streams[key]
	if s == nil {
		s = &gpmStream{}
		g.streams[key] = s
	}
	s.seen = true
	if s.cur == nil {
		smp, ret := b.lib.GpmSampleAlloc()
		if !r.ok("gpm sample allocation", ret) {
			return gpu.GPMReadings{}
		}
		s.cur = smp
	}
	if !r.ok("gpm sample", get(s.cur)) {
		return gpu.GPMReadings{}
	}
	var out gpu.GPMReadings
	if s.hasPrev {
		out = b.gpmMetrics(r, s.prev, s.cur)
	}
	s.prev, s.cur = s.cur, s.prev
	s.hasPrev = true
	return out
}

func (b *Backend) gpmMetrics(r *reader, s1, s2 nvml.GpmSample) gpu.GPMReadings {
	g := &b.gpm
	if g.req == nil {
		g.req = &nvml.GpmMetricsGetType{}
	}
	// Only the first NumMetrics slots are read or written; resetting just
	// those avoids clearing the whole (≈19 KB) request on every call.
	req := g.req
	req.NumMetrics, req.Sample1, req.Sample2 = uint32(len(gpmMetricIDs)), s1, s2
	for i, id := range gpmMetricIDs {
		req.Metrics[i] = nvml.GpmMetric{MetricId: uint32(id)}
	}
	if !r.ok("gpm metrics", b.lib.GpmMetricsGet(req)) {
		return gpu.GPMReadings{}
	}
	val := func(i int, scale float64) gpu.Opt[float64] {
		m := req.Metrics[i]
		if nvml.Return(m.NvmlReturn) != nvml.SUCCESS {
			return gpu.Opt[float64]{}
		}
		return gpu.Some(m.Value * scale)
	}
	return gpu.GPMReadings{
		GraphicsActive:  val(0, 0.01),
		SMActive:        val(1, 0.01),
		TensorActive:    val(2, 0.01),
		DRAMActive:      val(3, 0.01),
		PCIeTxBytesPerS: val(4, mib),
		PCIeRxBytesPerS: val(5, mib),
	}
}
