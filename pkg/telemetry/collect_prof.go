package telemetry

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var (
	grEngineActiveDesc = gaugeDesc("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.")
	smActiveDesc       = gaugeDesc("DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned.")
	tensorActiveDesc   = gaugeDesc("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active.")
	dramActiveDesc     = gaugeDesc("DCGM_FI_PROF_DRAM_ACTIVE", "Ratio of cycles the device memory interface is active sending or receiving data.")
	pcieTxBytesDesc    = gaugeDesc("DCGM_FI_PROF_PCIE_TX_BYTES",
		"The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.")
	pcieRxBytesDesc = gaugeDesc("DCGM_FI_PROF_PCIE_RX_BYTES",
		"The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.")
)

// profCollector exports the profiling metrics NVML's GPM gives on Hopper and
// newer GPUs: per GPU, or per MIG device when MIG is enabled. Older GPUs,
// and every GPU on the first pass after start, have none.
type profCollector struct{}

func (profCollector) Name() string { return "prof" }

func (profCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel != nil {
			addGPM(b, g.series, &g.tel.GPM)
		}
	}
	for i := range p.migs {
		m := &p.migs[i]
		if m.tel != nil {
			addGPM(b, m.series, &m.tel.GPM)
		}
	}
	return nil
}

func addGPM(b *builder, series []labels, r *gpu.GPMReadings) {
	opt(b, &grEngineActiveDesc, series, r.GraphicsActive)
	opt(b, &smActiveDesc, series, r.SMActive)
	opt(b, &tensorActiveDesc, series, r.TensorActive)
	opt(b, &dramActiveDesc, series, r.DRAMActive)
	opt(b, &pcieTxBytesDesc, series, r.PCIeTxBytesPerS)
	opt(b, &pcieRxBytesDesc, series, r.PCIeRxBytesPerS)
}
