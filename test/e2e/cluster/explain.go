package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// explain says why the pod's devices fit its demand, from the devices'
// topology and what else the node holds: the facts behind the choice.
func explain(w Workload, gn *v1alpha1.GPUNode, devs []Device) (why, interconnect string) {
	if len(devs) == 0 {
		return "", ""
	}
	var parts []string
	if len(w.Products) > 0 {
		parts = append(parts, "only "+strings.Join(w.Products, ", ")+" allowed")
	}
	d0 := devs[0]
	switch {
	case d0.MIGProfile != "":
		held, total := slicesOn(gn, d0.GPU)
		parts = append(parts, fmt.Sprintf("a %s MIG slice of GPU %d, which now has %d of %d slices held", d0.MIGProfile, d0.GPU, held, total))
	case d0.Replicas > 1:
		others := sharers(gn, w, d0.GPU)
		if len(others) == 0 {
			parts = append(parts, fmt.Sprintf("%d of GPU %d's %d time-sliced units", len(devs), d0.GPU, d0.Replicas))
		} else {
			parts = append(parts, fmt.Sprintf("%d of GPU %d's %d units, packed beside %s", len(devs), d0.GPU, d0.Replicas, strings.Join(others, ", ")))
		}
	default:
		var idx []int
		for _, d := range devs {
			idx = append(idx, d.GPU)
		}
		var s string
		s, interconnect = linkSummary(gn, idx, w.NVLink)
		parts = append(parts, s)
	}
	return strings.Join(parts, "; "), interconnect
}

// linkSummary describes the worst link within the GPU set.
func linkSummary(gn *v1alpha1.GPUNode, idx []int, nvlinkRequired bool) (string, string) {
	n := len(gn.Status.GPUs)
	links, err := v1alpha1.ParseLinks(gn.Status.Links, n)
	numa := map[int]bool{}
	for _, i := range idx {
		if g := gn.Status.GPUs[i]; g.NUMANode != nil {
			numa[int(*g.NUMANode)] = true
		}
	}
	numas := fmt.Sprintf("NUMA node %s", joinInts(slices.Sorted(maps.Keys(numa))))
	if len(idx) == 1 {
		return "1 GPU on " + numas, ""
	}
	if err != nil {
		return fmt.Sprintf("%d GPUs on %s", len(idx), numas), ""
	}
	allNV, allNVS, worst := true, true, 0
	for _, a := range idx {
		for _, b := range idx {
			if a == b {
				continue
			}
			c := links[a][b]
			allNV = allNV && c.NVLinks > 0
			allNVS = allNVS && c.NVSwitch
			worst = max(worst, slices.Index(v1alpha1.PCIePaths, c.PCIe))
		}
	}
	s, kind := fmt.Sprintf("%d GPUs ", len(idx)), "pcie"
	switch {
	case allNVS:
		s, kind = s+"all NVLink-connected through NVSwitch", "nvswitch"
	case allNV:
		s, kind = s+"all NVLink-connected", "nvlink"
	default:
		s += "on PCIe (" + pcieWords[v1alpha1.PCIePaths[worst]] + ")"
	}
	if nvlinkRequired {
		s += ", as the pod requires"
	}
	return s + ", " + numas, kind
}

var pcieWords = map[string]string{
	"PIX": "one PCIe switch", "PXB": "linked PCIe switches", "PHB": "one host bridge",
	"NODE": "one NUMA node", "SYS": "across NUMA nodes", "UNKNOWN": "unknown path",
}

func slicesOn(gn *v1alpha1.GPUNode, gpu int) (held, total int) {
	g := gn.Status.GPUs[gpu]
	ids := map[string]bool{}
	for _, s := range g.MIGSlices {
		ids[s.UUID] = true
	}
	for _, a := range gn.Status.Allocations {
		for _, id := range a.DeviceIDs {
			if ids[id] {
				held++
			}
		}
	}
	return held, len(g.MIGSlices)
}

// sharers are the other pods holding units of the GPU.
func sharers(gn *v1alpha1.GPUNode, w Workload, gpu int) []string {
	uuid := gn.Status.GPUs[gpu].UUID
	var out []string
	for _, a := range gn.Status.Allocations {
		if a.Namespace == w.Namespace && a.Pod == w.Name {
			continue
		}
		for _, id := range a.DeviceIDs {
			if u, _, _ := strings.Cut(id, "::"); u == uuid {
				out = append(out, a.Pod)
				break
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func joinInts(v []int) string {
	var s []string
	for _, i := range v {
		s = append(s, fmt.Sprint(i))
	}
	return strings.Join(s, " and ")
}
