package replay

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Machine is a node's hardware as the GPU agent discovers it: the GPUs'
// products, NUMA nodes and MIG geometry, and the link matrix.
type Machine struct {
	Name        string                 `json:"name"`
	Products    []string               `json:"products"`
	NUMA        []int                  `json:"numa"`
	MIGProfiles [][]gpu.MIGProfileInfo `json:"migProfiles"`
	Topology    gpu.Topology           `json:"topology"`
}

// MachineFromDiscovery turns a discovered machine into a template.
func MachineFromDiscovery(name string, m *gpu.Machine) Machine {
	out := Machine{Name: name, Topology: m.Topology}
	for _, d := range m.Devices {
		out.Products = append(out.Products, d.Product)
		out.NUMA = append(out.NUMA, d.NUMANode)
		out.MIGProfiles = append(out.MIGProfiles, d.MIGProfiles)
	}
	return out
}

// machineNames are the simulated machines (pkg/gpu/sim built-ins) the
// scenarios use; machines.json holds what Tessera discovers on them.
var machineNames = []string{"dgx-h100", "dgx-h200", "pcie-4xl40s", "pcie-8xa100-80gb"}

//go:embed machines.json
var machinesJSON []byte

var machines = sync.OnceValues(func() (map[string]Machine, error) {
	var list []Machine
	if err := json.Unmarshal(machinesJSON, &list); err != nil {
		return nil, fmt.Errorf("decoding the embedded machines.json: %w", err)
	}
	out := map[string]Machine{}
	for _, m := range list {
		out[m.Name] = m
	}
	return out, nil
})

// LookupMachine returns a machine template by name.
func LookupMachine(name string) (Machine, error) {
	ms, err := machines()
	if err != nil {
		return Machine{}, err
	}
	m, ok := ms[name]
	if !ok {
		return Machine{}, fmt.Errorf("unknown machine %q: known machines are %v", name, machineNames)
	}
	return m, nil
}

// nodeState builds the initial state of a node of group g.
func (g *NodeGroup) nodeState(name string, m Machine) (scoring.NodeState, error) {
	st := scoring.NodeState{Name: name, Topology: m.Topology, CPUFree: g.CPU, MemFree: g.Memory}
	for i, p := range m.Products {
		gp := scoring.GPU{Product: p, NUMANode: m.NUMA[i], Healthy: true}
		if g.ShareUnits > 0 {
			gp.Mode, gp.ShareTotal, gp.ShareFree = scoring.ModeShared, g.ShareUnits, g.ShareUnits
		}
		if layout, ok := g.MIG[i]; ok {
			gp.Mode, gp.MIGProfiles = scoring.ModeMIG, m.MIGProfiles[i]
			slices, err := fillMIG(m.MIGProfiles[i], layout)
			if err != nil {
				return st, fmt.Errorf("node group %s gpu %d: %w", g.Name, i, err)
			}
			gp.MIGSlices = slices
		}
		st.GPUs = append(st.GPUs, gp)
	}
	return st, nil
}

// fillMIG places the profiles, in order, each at its first legal placement
// still free, as mig-parted applies a layout.
func fillMIG(geometry []gpu.MIGProfileInfo, layout []string) ([]scoring.MIGSlice, error) {
	if len(geometry) == 0 {
		return nil, fmt.Errorf("mig layout %v on a gpu without mig", layout)
	}
	var out []scoring.MIGSlice
next:
	for _, name := range layout {
		i := slices.IndexFunc(geometry, func(p gpu.MIGProfileInfo) bool { return p.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("mig profile %q is not offered by the gpu", name)
		}
		for _, pl := range geometry[i].Placements {
			if !slices.ContainsFunc(out, func(s scoring.MIGSlice) bool { return s.Placement.Overlaps(pl) }) {
				out = append(out, scoring.MIGSlice{Profile: name, Placement: pl})
				continue next
			}
		}
		return nil, fmt.Errorf("mig layout %v: no free placement left for %s", layout, name)
	}
	return out, nil
}
