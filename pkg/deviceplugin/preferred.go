package deviceplugin

import (
	"fmt"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// preferred chooses size device IDs from available (always including
// mustInclude) with pkg/topology, the allocator the scheduler also uses:
// whole GPUs by interconnect, shares from one GPU by the share policy, MIG
// slices by what they leave placeable.
func (m *Manager) preferred(res Resource, available, mustInclude []string, size int) ([]string, error) {
	byID := make(map[string]Device, len(res.Devices))
	for _, d := range res.Devices {
		byID[d.ID] = d
	}
	for _, id := range slices.Concat(available, mustInclude) {
		if _, ok := byID[id]; !ok {
			return nil, fmt.Errorf("device %q is not a %s device", id, res.Name)
		}
	}
	if size < len(mustInclude) || size > len(available) {
		return nil, fmt.Errorf("cannot choose %d devices from %d available with %d required", size, len(available), len(mustInclude))
	}
	machine, o := m.state()
	switch {
	case res.Shared:
		return preferShares(res, byID, available, mustInclude, size, o.SharePolicy)
	case isMIG(byID, available):
		return preferMIG(machine, byID, available, mustInclude, size)
	default:
		return m.preferWhole(machine, byID, available, mustInclude, size)
	}
}

func isMIG(byID map[string]Device, ids []string) bool {
	return len(ids) > 0 && byID[ids[0]].MIG != nil
}

// preferWhole picks the best-connected set of whole GPUs.
func (m *Manager) preferWhole(machine *gpu.Machine, byID map[string]Device, available, mustInclude []string, size int) ([]string, error) {
	alloc, err := topology.ForMachine(machine)
	if err != nil {
		return nil, fmt.Errorf("building the topology of this node: %w", err)
	}
	pos := map[int]int{} // gpu index -> position in machine.Devices
	for i, d := range machine.Devices {
		pos[d.Index] = i
	}
	idAt := map[int]string{}
	toPositions := func(ids []string) []int {
		out := make([]int, 0, len(ids))
		for _, id := range ids {
			p := pos[byID[id].GPU]
			idAt[p] = id
			out = append(out, p)
		}
		return out
	}
	free, must := toPositions(available), toPositions(mustInclude)
	set, err := alloc.Allocate(free, must, size)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(set))
	for i, p := range set {
		out[i] = idAt[p]
	}
	return out, nil
}

// preferShares takes all units from one physical device.
func preferShares(res Resource, byID map[string]Device, available, mustInclude []string, size int, policy SharePolicy) ([]string, error) {
	total := map[string]int{}
	for _, d := range res.Devices {
		total[d.UUID]++
	}
	freeIDs := map[string][]string{}
	for _, id := range available {
		u := byID[id].UUID
		freeIDs[u] = append(freeIDs[u], id)
	}
	// The physical devices in the resource's order (by GPU), not in the
	// kubelet's: it passes the available IDs in map order, and equal GPUs
	// go to the lowest position, as in the scheduler's model.
	var order []string
	for _, d := range res.Devices {
		if len(freeIDs[d.UUID]) > 0 && !slices.Contains(order, d.UUID) {
			order = append(order, d.UUID)
		}
	}
	var chosen string
	if len(mustInclude) > 0 {
		chosen = byID[mustInclude[0]].UUID
	} else {
		gpus := make([]topology.ShareGPU, len(order))
		for i, u := range order {
			gpus[i] = topology.ShareGPU{Free: len(freeIDs[u]), Total: total[u], Healthy: true}
		}
		i, err := topology.PickShareGPU(gpus, size, topology.SharePolicy(policy))
		if err != nil {
			return nil, fmt.Errorf("a shared request must be served by one GPU: %w", err)
		}
		chosen = order[i]
	}
	out := slices.Clone(mustInclude)
	for _, id := range freeIDs[chosen] {
		if len(out) == size {
			break
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// preferMIG picks slices one at a time, each where it fragments least.
func preferMIG(machine *gpu.Machine, byID map[string]Device, available, mustInclude []string, size int) ([]string, error) {
	out := slices.Clone(mustInclude)
	taken := map[string]bool{}
	for _, id := range out {
		taken[id] = true
	}
	for len(out) < size {
		var gpus []topology.MIGGPU
		var candidates [][]string // per entry of gpus, the free IDs by placement
		for _, d := range machine.Devices {
			if !d.MIGEnabled {
				continue
			}
			// The geometry of the slices that exist, as gpu-scheduler
			// models the GPU from its GPUNode, so that both pick the same
			// slice of the same free set.
			shapes := make([]topology.Slice, 0, len(d.MIGDevices))
			for _, md := range d.MIGDevices {
				shapes = append(shapes, topology.Slice{Profile: md.Profile, Placement: md.Placement, MemoryMiB: md.MemoryMiB})
			}
			g := topology.MIGGPU{Profiles: topology.SliceGeometry(shapes)}
			var ids []string
			for _, md := range d.MIGDevices {
				free := slices.Contains(available, md.UUID) && !taken[md.UUID]
				if free {
					g.Free = append(g.Free, md.Placement)
					ids = append(ids, md.UUID)
				} else {
					g.Used = append(g.Used, md.Placement)
				}
			}
			gpus = append(gpus, g)
			candidates = append(candidates, ids)
		}
		gi, pl, err := topology.PickMIGDevice(gpus)
		if err != nil {
			return nil, fmt.Errorf("choosing a mig slice: %w", err)
		}
		i := slices.Index(gpus[gi].Free, pl)
		id := candidates[gi][i]
		taken[id] = true
		out = append(out, id)
	}
	return out, nil
}
