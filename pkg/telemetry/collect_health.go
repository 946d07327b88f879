package telemetry

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var healthStateDesc = gaugeDesc("tessera_gpu_health_state",
	"1 for the health state the GPU is in (Healthy or Unhealthy, as advertised to the kubelet), 0 for the other.")

// healthCollector exports each GPU's health as the device plugin's tracker
// sees it.
type healthCollector struct{}

func (healthCollector) Name() string { return "health" }

func (healthCollector) Update(_ context.Context, p *pass, b *builder) error {
	if !p.healthy {
		return nil
	}
	base := make(map[string]labels, len(p.gpus))
	for i := range p.gpus {
		base[p.gpus[i].dev.UUID] = p.gpus[i].ids
	}
	for _, s := range p.health {
		ls, ok := base[s.UUID]
		if !ok {
			continue // the tracker follows a GPU the machine model does not have
		}
		for _, state := range []gpu.HealthState{gpu.Healthy, gpu.Unhealthy} {
			v := 0.0
			if s.State == state {
				v = 1
			}
			b.gauge(&healthStateDesc, ls.with(label("state", string(state))), v)
		}
	}
	return nil
}
