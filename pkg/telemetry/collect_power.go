package telemetry

import "context"

var (
	powerUsageDesc = gaugeDesc("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")
	energyDesc     = counterDesc("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).")
)

// powerCollector exports power draw and the energy counter.
type powerCollector struct{}

func (powerCollector) Name() string { return "power" }

func (powerCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		opt(b, &powerUsageDesc, g.series, g.tel.PowerWatts)
		opt(b, &energyDesc, g.series, g.tel.EnergyMilliJoules)
	}
	return nil
}
