package telemetry

import (
	"context"
	"slices"
	"strconv"
)

var (
	migEnabledDesc = gaugeDesc("tessera_gpu_mig_enabled",
		"1 if MIG mode is enabled on the GPU, 0 if it is disabled; absent on GPUs that are not MIG capable.")
	migPendingDesc = gaugeDesc("tessera_gpu_mig_mode_change_pending",
		"1 if a MIG mode change waits for a GPU reset, 0 if not.")
	migDevicesDesc = gaugeDesc("tessera_gpu_mig_devices",
		"MIG devices on the GPU, by profile.")
	migDeviceInfoDesc = gaugeDesc("tessera_mig_device_info",
		"1 for every MIG device, with its UUID (mig_uuid), profile, GPU instance ID and placement (start:size in memory slices).")
)

// migCollector exports the MIG layout of every MIG-capable GPU.
type migCollector struct{}

func (migCollector) Name() string { return "mig" }

func (migCollector) Update(_ context.Context, p *pass, b *builder) error {
	for i := range p.gpus {
		g := &p.gpus[i]
		d := g.dev
		if !d.MIGCapable {
			continue
		}
		b.gauge(&migEnabledDesc, g.ids, boolValue(d.MIGEnabled))
		b.gauge(&migPendingDesc, g.ids, boolValue(d.MIGPendingEnabled != d.MIGEnabled))
		counts := map[string]int{}
		for _, m := range d.MIGDevices {
			counts[m.Profile]++
		}
		profiles := make([]string, 0, len(counts))
		for name := range counts {
			profiles = append(profiles, name)
		}
		slices.Sort(profiles)
		for _, name := range profiles {
			b.gauge(&migDevicesDesc, g.ids.with(label("profile", name)), float64(counts[name]))
		}
	}
	for i := range p.migs {
		m := &p.migs[i]
		b.gauge(&migDeviceInfoDesc, m.ids.with(
			label("mig_uuid", m.mig.UUID),
			label("placement", strconv.Itoa(m.mig.Placement.Start)+":"+strconv.Itoa(m.mig.Placement.Size)),
		), 1)
	}
	return nil
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
