package telemetry

import "context"

var (
	smClockDesc  = gaugeDesc("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).")
	memClockDesc = gaugeDesc("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).")
)

// clocksCollector exports the SM and memory clocks of every physical GPU.
type clocksCollector struct{}

func (clocksCollector) Name() string { return "clocks" }

func (clocksCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		opt(b, &smClockDesc, g.series, g.tel.SMClockMHz)
		opt(b, &memClockDesc, g.series, g.tel.MemClockMHz)
	}
	return nil
}
