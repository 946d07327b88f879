package telemetry

import (
	"context"
	"strconv"
)

var telemetryUpDesc = gaugeDesc("tessera_gpu_telemetry_up",
	"1 if the GPU's telemetry was read in the last pass, 0 if it could not be (its DCGM_FI_* series are then absent).")

// devicesCollector says which GPUs could be read: every GPU of the machine
// model, and the GPUs discovery saw but could not read.
type devicesCollector struct{}

func (devicesCollector) Name() string { return "devices" }

func (devicesCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		up := 1.0
		if g.tel == nil {
			up = 0
		}
		b.gauge(&telemetryUpDesc, g.ids, up)
	}
	for _, f := range p.failed {
		b.gauge(&telemetryUpDesc, labels{
			label(labelGPU, strconv.Itoa(f.Index)),
			label(labelUUID, f.UUID),
			label(labelHostnameDCGM, p.hostname),
			label(labelHostname, p.hostname),
		}, 0)
	}
	return nil
}
