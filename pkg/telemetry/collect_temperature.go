package telemetry

import "context"

var (
	memoryTempDesc = gaugeDesc("DCGM_FI_DEV_MEMORY_TEMP", "Memory temperature (in C).")
	gpuTempDesc    = gaugeDesc("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")
)

// temperatureCollector exports GPU and memory temperatures.
type temperatureCollector struct{}

func (temperatureCollector) Name() string { return "temperature" }

func (temperatureCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		opt(b, &memoryTempDesc, g.series, g.tel.MemoryTempC)
		opt(b, &gpuTempDesc, g.series, g.tel.GPUTempC)
	}
	return nil
}
