package telemetry

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var nvlinkBandwidthDesc = counterDesc("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
	"Total number of NVLink bandwidth counters for all lanes (KiB transmitted and received since the driver loaded).")

// nvlinkCollector exports the NVLink traffic counter, summed over links and
// directions, on GPUs that have NVLink.
type nvlinkCollector struct{}

func (nvlinkCollector) Name() string { return "nvlink" }

func (nvlinkCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil || !g.tel.NVLinkTxKiB.Valid || !g.tel.NVLinkRxKiB.Valid {
			continue
		}
		opt(b, &nvlinkBandwidthDesc, g.series, gpu.Some(g.tel.NVLinkTxKiB.Val+g.tel.NVLinkRxKiB.Val))
	}
	return nil
}
