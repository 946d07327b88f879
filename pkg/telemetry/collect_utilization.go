package telemetry

import "context"

var (
	gpuUtilDesc     = gaugeDesc("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")
	memCopyUtilDesc = gaugeDesc("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).")
	encUtilDesc     = gaugeDesc("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).")
	decUtilDesc     = gaugeDesc("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).")
)

// utilizationCollector exports NVML's utilization rates. NVML does not give
// them in MIG mode, so a MIG GPU has none (see the profiling collector).
type utilizationCollector struct{}

func (utilizationCollector) Name() string { return "utilization" }

func (utilizationCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		opt(b, &gpuUtilDesc, g.series, g.tel.GPUUtilPercent)
		opt(b, &memCopyUtilDesc, g.series, g.tel.MemCopyUtilPercent)
		opt(b, &encUtilDesc, g.series, g.tel.EncUtilPercent)
		opt(b, &decUtilDesc, g.series, g.tel.DecUtilPercent)
	}
	return nil
}
