package telemetry

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var (
	pcieReplayDesc  = counterDesc("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries.")
	remapUncorrDesc = counterDesc("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors")
	remapCorrDesc   = counterDesc("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors")
	remapFailDesc   = gaugeDesc("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed")
	eccSBEVolDesc   = counterDesc("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors.")
	eccDBEVolDesc   = counterDesc("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors.")
	eccSBEAggDesc   = counterDesc("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors.")
	eccDBEAggDesc   = counterDesc("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors.")
)

// errorsCollector exports PCIe replays, row remapping and ECC counts.
type errorsCollector struct{}

func (errorsCollector) Name() string { return "errors" }

func (errorsCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		t := g.tel
		opt(b, &pcieReplayDesc, g.series, t.PCIeReplays)
		opt(b, &remapUncorrDesc, g.series, t.RemappedRowsUncorrectable)
		opt(b, &remapCorrDesc, g.series, t.RemappedRowsCorrectable)
		opt(b, &remapFailDesc, g.series, boolReading(t.RowRemapFailure))
		opt(b, &eccSBEVolDesc, g.series, t.ECCCorrectedVolatile)
		opt(b, &eccDBEVolDesc, g.series, t.ECCUncorrectedVolatile)
		opt(b, &eccSBEAggDesc, g.series, t.ECCCorrectedAggregate)
		opt(b, &eccDBEAggDesc, g.series, t.ECCUncorrectedAggregate)
	}
	return nil
}

// boolReading turns a flag into 0/1, keeping it absent when it is absent.
func boolReading(o gpu.Opt[bool]) gpu.Opt[int] {
	if !o.Valid {
		return gpu.Opt[int]{}
	}
	if o.Val {
		return gpu.Some(1)
	}
	return gpu.Some(0)
}
