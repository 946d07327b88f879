package telemetry

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var (
	lastXIDDesc  = gaugeDesc("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.")
	xidTotalDesc = counterDesc("tessera_gpu_xid_errors_total",
		"XID errors reported by the GPU since the agent started, by XID code, with a short description and whether the health policy treats it as fatal.")
	eccEventsDesc = counterDesc("tessera_gpu_ecc_error_events_total",
		"ECC error events reported by the GPU since the agent started, by type (single-bit: corrected, double-bit: uncorrected).")
)

// xidCollector exports the XID and ECC events ObserveEvent counted: the
// last XID per GPU (0 before any, as dcgm-exporter reports), a counter per
// GPU and XID code, and ECC event counters.
type xidCollector struct{}

func (xidCollector) Name() string { return "xid" }

func (xidCollector) Update(_ context.Context, p *pass, b *builder) error {
	byIndex := make(map[int]*gpuTarget, len(p.gpus))
	for i := range p.gpus {
		g := &p.gpus[i]
		byIndex[g.dev.Index] = g
		b.each(&lastXIDDesc, g.series, float64(p.events.lastXID[g.dev.Index]))
	}
	keys := slices.SortedFunc(maps.Keys(p.events.xids), func(a, b xidKey) int {
		return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(a.xid, b.xid))
	})
	for _, k := range keys {
		g := byIndex[k.index]
		if g == nil {
			continue // a GPU the machine model no longer has
		}
		ls := g.ids.with(
			label("xid", strconv.FormatUint(k.xid, 10)),
			label("description", xidDescription(k.xid)),
			label("fatal", strconv.FormatBool(p.fatalXID(k.xid))),
		)
		b.counter(&xidTotalDesc, ls, float64(p.events.xids[k]))
	}
	for i := range p.gpus {
		g := &p.gpus[i]
		for _, kind := range []gpu.EventKind{gpu.EventECCSingleBit, gpu.EventECCDoubleBit} {
			n, ok := p.events.ecc[eccKey{index: g.dev.Index, kind: kind}]
			if !ok {
				continue
			}
			typ := "single-bit"
			if kind == gpu.EventECCDoubleBit {
				typ = "double-bit"
			}
			b.counter(&eccEventsDesc, g.ids.with(label("type", typ)), float64(n))
		}
	}
	return nil
}
