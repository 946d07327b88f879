package telemetry

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var (
	fbFreeDesc     = gaugeDesc("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).")
	fbUsedDesc     = gaugeDesc("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).")
	fbReservedDesc = gaugeDesc("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB).")
)

// memoryCollector exports framebuffer usage of every GPU and, as
// dcgm-exporter does, of every MIG device (with GPU_I_PROFILE and GPU_I_ID).
type memoryCollector struct{}

func (memoryCollector) Name() string { return "memory" }

func (memoryCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		opt(b, &fbFreeDesc, g.series, g.tel.FBFreeMiB)
		opt(b, &fbUsedDesc, g.series, g.tel.FBUsedMiB)
		opt(b, &fbReservedDesc, g.series, g.tel.FBReservedMiB)
	}
	for i := range p.migs {
		m := &p.migs[i]
		if m.tel == nil {
			continue
		}
		if m.tel.FBUsedMiB.Valid && m.tel.FBTotalMiB.Valid && m.tel.FBTotalMiB.Val >= m.tel.FBUsedMiB.Val {
			opt(b, &fbFreeDesc, m.series, gpu.Some(m.tel.FBTotalMiB.Val-m.tel.FBUsedMiB.Val))
		}
		opt(b, &fbUsedDesc, m.series, m.tel.FBUsedMiB)
	}
	return nil
}
