package telemetry

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// dcgm-exporter's label names.
const (
	labelGPU           = "gpu"
	labelUUID          = "UUID"
	labelDevice        = "device"
	labelModelName     = "modelName"
	labelPCIBusID      = "pci_bus_id"
	labelHostnameDCGM  = "Hostname"
	labelHostname      = "hostname"
	labelGPUIProfile   = "GPU_I_PROFILE"
	labelGPUIID        = "GPU_I_ID"
	labelDriverVersion = "DCGM_FI_DRIVER_VERSION"
	labelContainer     = "container"
	labelNamespace     = "namespace"
	labelPod           = "pod"
)

// pass is everything the collectors of one collection pass read. It is
// built once, before the collectors run, and never modified by them: pod
// attribution is resolved here, so collectors only read maps and slices.
type pass struct {
	now      time.Time
	hostname string
	machine  *gpu.Machine // nil when discovery has not succeeded yet
	gpus     []gpuTarget
	migs     []migTarget
	failed   []gpu.DeviceFailure

	// pods is whether a pod view is configured; podStatus its status and
	// podsUsable whether its holders label series this pass.
	pods       bool
	podStatus  podresources.Status
	podsUsable bool
	// holders are the holders of this machine's devices (GPU, MIG and share
	// IDs), when podsUsable.
	holders []podresources.Holder

	// owners are the pods of the GPU processes in the sample that run in a
	// known pod, by PID (empty without ProcessOwners).
	owners map[uint32]procmap.Owner

	health  []gpu.HealthStatus // nil when no HealthLookup is configured
	healthy bool               // whether health is configured

	events   eventCounts
	fatalXID func(xid uint64) bool
}

// gpuTarget is a physical GPU with its readings and label sets.
type gpuTarget struct {
	dev *gpu.Device
	// tel is nil when the sample has no readings for the GPU (err says why).
	tel *gpu.DeviceTelemetry
	err error
	// base are the device labels without pod labels; series are the label
	// sets of its series: one per holding container, or base alone. A GPU in
	// MIG mode is held through its MIG devices, so its series carry no pod.
	base   labels
	series []labels
	// ids are the labels of Tessera's own per-GPU metrics: dcgm-exporter's
	// identifying labels (gpu, UUID, device, Hostname, hostname) without
	// the descriptive ones, and in snake_case where promlint checks it.
	ids labels
}

// migTarget is a MIG device with its readings and label sets.
type migTarget struct {
	parent *gpuTarget
	mig    *gpu.MIGDevice
	tel    *gpu.MIGTelemetry // nil when the sample lacks the instance
	base   labels
	series []labels
	ids    labels // as gpuTarget.ids, with GPU_I_PROFILE and GPU_I_ID
}

func (e *Exporter) newPass(now time.Time, m *gpu.Machine, sample *gpu.Snapshot) *pass {
	p := &pass{now: now, hostname: e.opts.NodeName, machine: m, events: e.events.counts(), fatalXID: e.opts.FatalXID}
	if e.opts.Health != nil {
		p.healthy = true
		p.health = e.opts.Health.States()
	}
	if e.opts.Pods != nil {
		p.pods = true
		p.podStatus = e.opts.Pods.Status()
		p.podsUsable = p.podStatus.OK || (!p.podStatus.Updated.IsZero() && now.Sub(p.podStatus.Updated) <= e.opts.PodsMaxAge)
	}
	if m == nil {
		return p
	}
	p.failed = m.Failed
	p.owners = e.resolveOwners(sample)

	byUUID := map[string]*gpu.DeviceTelemetry{}
	if sample != nil {
		for i := range sample.Devices {
			byUUID[sample.Devices[i].UUID] = &sample.Devices[i]
		}
	}
	holdersOf := func(id string) []podresources.Holder {
		if !p.podsUsable {
			return nil
		}
		hs := e.opts.Pods.Holders(id)
		p.holders = append(p.holders, hs...)
		return hs
	}

	p.gpus = make([]gpuTarget, len(m.Devices))
	for i := range m.Devices {
		d := &m.Devices[i]
		g := &p.gpus[i]
		g.dev = d
		switch t := byUUID[d.UUID]; {
		case sample == nil:
			g.err = fmt.Errorf("no telemetry sample for gpu %d", d.Index)
		case t == nil:
			g.err = fmt.Errorf("gpu %d (%s) is missing from the telemetry sample", d.Index, d.UUID)
		case t.Err != nil:
			g.err = fmt.Errorf("reading gpu %d (%s): %w", d.Index, d.UUID, t.Err)
		default:
			g.tel = t
		}
		g.base = labels{
			label(labelGPU, strconv.Itoa(d.Index)),
			label(labelUUID, d.UUID),
			label(labelPCIBusID, dcgmBusID(d.PCIBusID)),
			label(labelDevice, "nvidia"+strconv.Itoa(d.Index)),
			label(labelModelName, d.Name),
			label(labelHostnameDCGM, p.hostname),
			label(labelHostname, p.hostname),
			label(labelDriverVersion, m.Versions.Driver),
		}
		g.ids = labels{g.base[0], g.base[1], g.base[3], g.base[5], g.base[6]}
		if d.MIGEnabled {
			// Held through MIG devices; the GPU's own ID is not advertised.
			g.series = []labels{g.base}
		} else {
			g.series = podSeries(g.base, holdersOf(d.UUID))
		}
	}
	for i := range p.gpus {
		g := &p.gpus[i]
		for j := range g.dev.MIGDevices {
			md := &g.dev.MIGDevices[j]
			t := migTarget{parent: g, mig: md}
			if g.tel != nil {
				for k := range g.tel.MIG {
					if g.tel.MIG[k].GPUInstanceID == md.GPUInstanceID {
						t.tel = &g.tel.MIG[k]
					}
				}
			}
			// dcgm-exporter labels a MIG device with its parent's gpu,
			// UUID and device, plus the GPU instance's profile and ID.
			t.base = labels{
				g.base[0], g.base[1], g.base[2], g.base[3], g.base[4],
				label(labelGPUIProfile, md.Profile),
				label(labelGPUIID, strconv.Itoa(md.GPUInstanceID)),
				g.base[5], g.base[6], g.base[7],
			}
			t.series = podSeries(t.base, holdersOf(md.UUID))
			t.ids = labels{g.base[0], g.base[1], g.base[3], t.base[5], t.base[6], g.base[5], g.base[6]}
			p.migs = append(p.migs, t)
		}
	}
	return p
}

// resolveOwners resolves the sample's processes to pods. A process that
// has ended or runs outside every known pod is left out.
func (e *Exporter) resolveOwners(sample *gpu.Snapshot) map[uint32]procmap.Owner {
	if e.opts.Processes == nil || sample == nil {
		return nil
	}
	var owners map[uint32]procmap.Owner
	for i := range sample.Devices {
		for _, proc := range sample.Devices[i].Processes {
			if _, done := owners[proc.PID]; done {
				continue
			}
			o, err := e.opts.Processes.Owner(proc.PID)
			if err != nil || o.Kind != procmap.KindPod {
				continue
			}
			if owners == nil {
				owners = map[uint32]procmap.Owner{}
			}
			owners[proc.PID] = o
		}
	}
	return owners
}

// podSeries returns one label set per distinct container among holders (a
// container holding two shares of a GPU is one series), or base alone when
// nobody holds the device.
func podSeries(base labels, holders []podresources.Holder) []labels {
	if len(holders) == 0 {
		return []labels{base}
	}
	out := make([]labels, 0, len(holders))
	seen := make(map[[3]string]bool, len(holders))
	for _, h := range holders {
		k := [3]string{h.Namespace, h.Pod, h.Container}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, base.with(label(labelContainer, h.Container), label(labelNamespace, h.Namespace), label(labelPod, h.Pod)))
	}
	return out
}

// dcgmBusID writes a canonical "0000:1b:00.0" bus ID as DCGM does:
// "00000000:1B:00.0" (NVML's legacy form, eight-digit domain, upper case).
func dcgmBusID(id string) string {
	domain, rest, ok := strings.Cut(id, ":")
	if !ok || len(domain) > 8 {
		return strings.ToUpper(id)
	}
	return strings.Repeat("0", 8-len(domain)) + strings.ToUpper(domain) + ":" + strings.ToUpper(rest)
}
