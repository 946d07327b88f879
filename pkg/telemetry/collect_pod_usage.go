package telemetry

import (
	"cmp"
	"context"
	"slices"
	"strconv"
)

var (
	podUtilizationDesc = gaugeDesc("tessera_pod_gpu_utilization_ratio",
		"Share of the time (0..1) one of the container's kernels ran on the GPU over the last collection interval, summed over its processes, from NVML's per-process samples. Absent on MIG devices and GPUs that do not sample processes.")
	podMemoryDesc = gaugeDesc("tessera_pod_gpu_memory_used_bytes",
		"GPU memory used by the container's processes on the GPU or MIG device (GPU_I_PROFILE, GPU_I_ID), from NVML's running compute processes.")
)

// podUsageCollector exports what each container's own processes use of a
// GPU or MIG device, so that holders of a shared GPU are told apart (the
// DCGM_FI_* series repeat the whole GPU's readings on every holder's
// series). Processes are attributed by their cgroup (ProcessOwners), not by
// the PodResources view: a process that uses a GPU its pod was not
// allocated shows up under that pod too.
type podUsageCollector struct{}

func (podUsageCollector) Name() string { return "pod_usage" }

func (podUsageCollector) Update(_ context.Context, p *pass, b *builder) error {
	if len(p.owners) == 0 {
		return nil
	}
	type key struct {
		gi                 int
		ns, pod, container string
	}
	type usage struct {
		memBytes float64
		util     float64
		utilOK   bool
	}
	for i := range p.gpus {
		g := &p.gpus[i]
		if g.tel == nil {
			continue
		}
		byKey := map[key]*usage{}
		var keys []key
		for _, proc := range g.tel.Processes {
			o, ok := p.owners[proc.PID]
			if !ok {
				continue
			}
			k := key{proc.GPUInstanceID, o.Namespace, o.Pod, o.Container}
			u := byKey[k]
			if u == nil {
				u = &usage{utilOK: true}
				byKey[k] = u
				keys = append(keys, k)
			}
			u.memBytes += float64(proc.UsedMemoryMiB) * (1 << 20)
			u.utilOK = u.utilOK && proc.SMUtilPercent.Valid
			u.util += float64(proc.SMUtilPercent.Val) / 100
		}
		slices.SortFunc(keys, func(a, b key) int {
			return cmp.Or(cmp.Compare(a.gi, b.gi), cmp.Compare(a.ns, b.ns), cmp.Compare(a.pod, b.pod), cmp.Compare(a.container, b.container))
		})
		for _, k := range keys {
			ls := labels{g.base[0], g.base[1]}
			if k.gi >= 0 {
				profile := ""
				for _, md := range g.dev.MIGDevices {
					if md.GPUInstanceID == k.gi {
						profile = md.Profile
					}
				}
				ls = append(ls, label(labelGPUIProfile, profile), label(labelGPUIID, strconv.Itoa(k.gi)))
			}
			ls = append(ls, g.base[5], label(labelContainer, k.container), label(labelNamespace, k.ns), label(labelPod, k.pod))
			u := byKey[k]
			b.gauge(&podMemoryDesc, ls, u.memBytes)
			if u.utilOK && k.gi < 0 {
				b.gauge(&podUtilizationDesc, ls, min(u.util, 1))
			}
		}
	}
	return nil
}
