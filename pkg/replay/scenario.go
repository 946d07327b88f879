package replay

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// NodeGroup is Count identical nodes.
type NodeGroup struct {
	// Name prefixes the nodes' names ("dgx-mig" -> dgx-mig-0, dgx-mig-1, ...).
	Name string `json:"name"`
	// Machine is the hardware template (LookupMachine).
	Machine string `json:"machine"`
	Count   int    `json:"count"`
	// CPU is the node's allocatable milli-CPU, Memory its MiB.
	CPU    int64 `json:"cpu"`
	Memory int64 `json:"memory"`
	// MIG maps a GPU index to the MIG profiles created on it, in order, each
	// at its first free legal placement.
	MIG map[int][]string `json:"mig,omitempty"`
	// ShareUnits > 0 time-shares every GPU of the node into that many units.
	ShareUnits int `json:"shareUnits,omitempty"`
}

// PodKind is one kind of pod of the workload mix.
type PodKind struct {
	Name string `json:"name"`
	// Weight is the kind's share of arriving pods (relative).
	Weight float64        `json:"weight"`
	Demand scoring.Demand `json:"demand"`
}

// Scenario is a cluster and a workload mix. Pods arrive one at a time, kinds
// drawn by weight from a seeded stream, until their GPU demand reaches Load
// times the cluster's GPU capacity; pods never leave.
type Scenario struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Nodes       []NodeGroup `json:"nodes"`
	Pods        []PodKind   `json:"pods"`
	Load        float64     `json:"load"`
}

// Validate checks the scenario; errors name the group or pod kind at fault.
func (s *Scenario) Validate() error {
	var errs []error
	if len(s.Nodes) == 0 {
		errs = append(errs, errors.New("no node group"))
	}
	if len(s.Pods) == 0 {
		errs = append(errs, errors.New("no pod kind"))
	}
	if !(s.Load > 0) || math.IsInf(s.Load, 0) {
		errs = append(errs, fmt.Errorf("load %v: want a positive multiple of the cluster's gpu capacity", s.Load))
	}
	for i, g := range s.Nodes {
		m, err := LookupMachine(g.Machine)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("node group %d (%s): %w", i, g.Name, err))
		case g.Count < 1 || g.CPU < 0 || g.Memory < 0 || g.ShareUnits < 0:
			errs = append(errs, fmt.Errorf("node group %d (%s): count %d, cpu %d, memory %d, share units %d: want count >= 1 and no negative value", i, g.Name, g.Count, g.CPU, g.Memory, g.ShareUnits))
		default:
			for gi := range g.MIG {
				if gi < 0 || gi >= len(m.Products) {
					errs = append(errs, fmt.Errorf("node group %d (%s): mig layout for gpu %d, machine %s has gpus 0 to %d", i, g.Name, gi, g.Machine, len(m.Products)-1))
				}
			}
			if _, err := g.nodeState(g.Name, m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i, p := range s.Pods {
		if !(p.Weight > 0) || math.IsInf(p.Weight, 0) {
			errs = append(errs, fmt.Errorf("pod kind %d (%s): weight %v, want a positive number", i, p.Name, p.Weight))
		}
		if err := p.Demand.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("pod kind %d (%s): %w", i, p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Products of the machine templates, as GPU Feature Discovery labels them.
const (
	ProductH100 = "NVIDIA-H100-80GB-HBM3"
	ProductH200 = "NVIDIA-H200"
	ProductL40S = "NVIDIA-L40S"
	ProductA100 = "NVIDIA-A100-80GB-PCIe"
)

const (
	core = 1000    // milli-CPU
	gib  = 1 << 10 // MiB
)

// dgxMIG is the MIG layout of the MIG-partitioned DGX H100 nodes: two GPUs
// of seven 1g.10gb, three of three 2g.20gb and a 1g.10gb, three of two
// 3g.40gb (17 1g, 9 2g and 6 3g slices per node, near the 8:4:3 mix of the
// inference kinds).
var dgxMIG = map[int][]string{
	0: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"},
	1: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"},
	2: {"2g.20gb", "2g.20gb", "2g.20gb", "1g.10gb"},
	3: {"2g.20gb", "2g.20gb", "2g.20gb", "1g.10gb"},
	4: {"2g.20gb", "2g.20gb", "2g.20gb", "1g.10gb"},
	5: {"3g.40gb", "3g.40gb"},
	6: {"3g.40gb", "3g.40gb"},
	7: {"3g.40gb", "3g.40gb"},
}

var (
	nvlinkProducts = []string{ProductH100, ProductH200, ProductA100}
	servingGPUs    = []string{ProductL40S, ProductA100, ProductH100}
)

// mixedPods is the workload of the built-in scenarios.
var mixedPods = []PodKind{
	{Name: "train-8gpu", Weight: 1, Demand: scoring.Demand{GPUs: 8, CPU: 96 * core, Memory: 1024 * gib, Allowed: []string{ProductH100, ProductH200}}},
	{Name: "train-4gpu", Weight: 2, Demand: scoring.Demand{GPUs: 4, CPU: 48 * core, Memory: 512 * gib, Allowed: nvlinkProducts}},
	{Name: "train-2gpu", Weight: 4, Demand: scoring.Demand{GPUs: 2, CPU: 24 * core, Memory: 256 * gib, Allowed: nvlinkProducts}},
	{Name: "finetune-2gpu-any", Weight: 2, Demand: scoring.Demand{GPUs: 2, CPU: 16 * core, Memory: 128 * gib}},
	{Name: "infer-1g", Weight: 8, Demand: scoring.Demand{MIGProfile: "1g.10gb", CPU: 4 * core, Memory: 32 * gib}},
	{Name: "infer-2g", Weight: 4, Demand: scoring.Demand{MIGProfile: "2g.20gb", CPU: 8 * core, Memory: 64 * gib}},
	{Name: "infer-3g", Weight: 3, Demand: scoring.Demand{MIGProfile: "3g.40gb", CPU: 8 * core, Memory: 96 * gib}},
	{Name: "notebook-1u", Weight: 10, Demand: scoring.Demand{ShareUnits: 1, CPU: 2 * core, Memory: 8 * gib}},
	{Name: "notebook-2u", Weight: 3, Demand: scoring.Demand{ShareUnits: 2, CPU: 4 * core, Memory: 16 * gib}},
	{Name: "serve-1gpu", Weight: 6, Demand: scoring.Demand{GPUs: 1, CPU: 8 * core, Memory: 64 * gib, Allowed: servingGPUs}},
	{Name: "preprocess-1gpu-cpu-heavy", Weight: 3, Demand: scoring.Demand{GPUs: 1, CPU: 40 * core, Memory: 192 * gib}},
	{Name: "llm-h200-only", Weight: 1, Demand: scoring.Demand{GPUs: 1, CPU: 16 * core, Memory: 256 * gib, Allowed: []string{ProductH200}}},
}

// Scenarios returns the built-in scenarios, by name.
func Scenarios() []Scenario {
	return []Scenario{
		{
			Name: "mixed",
			Description: "20 DGX H100 (4 MIG-partitioned), 2 DGX H200, 8 PCIe L40S (2 NUMA nodes), 4 time-shared L40S, " +
				"2 PCIe A100 80GB (NVLink pairs); 8/4/2-GPU training, 1g/2g/3g inference, notebooks, product-constrained pods; load 1.1",
			Load: 1.1,
			Nodes: []NodeGroup{
				{Name: "dgx-h100", Machine: "dgx-h100", Count: 16, CPU: 224 * core, Memory: 2048 * gib},
				{Name: "dgx-h100-mig", Machine: "dgx-h100", Count: 4, CPU: 224 * core, Memory: 2048 * gib, MIG: dgxMIG},
				{Name: "dgx-h200", Machine: "dgx-h200", Count: 2, CPU: 224 * core, Memory: 2048 * gib},
				{Name: "l40s", Machine: "pcie-4xl40s", Count: 8, CPU: 48 * core, Memory: 384 * gib},
				{Name: "l40s-shared", Machine: "pcie-4xl40s", Count: 4, CPU: 48 * core, Memory: 384 * gib, ShareUnits: 4},
				{Name: "a100-pcie", Machine: "pcie-8xa100-80gb", Count: 2, CPU: 128 * core, Memory: 1024 * gib},
			},
			Pods: mixedPods,
		},
		{
			Name:        "small",
			Description: "4 DGX H100 (1 MIG-partitioned), 1 DGX H200, 2 PCIe L40S, 1 time-shared L40S, 1 PCIe A100 80GB; the mixed workload; load 1.1",
			Load:        1.1,
			Nodes: []NodeGroup{
				{Name: "dgx-h100", Machine: "dgx-h100", Count: 3, CPU: 224 * core, Memory: 2048 * gib},
				{Name: "dgx-h100-mig", Machine: "dgx-h100", Count: 1, CPU: 224 * core, Memory: 2048 * gib, MIG: dgxMIG},
				{Name: "dgx-h200", Machine: "dgx-h200", Count: 1, CPU: 224 * core, Memory: 2048 * gib},
				{Name: "l40s", Machine: "pcie-4xl40s", Count: 2, CPU: 48 * core, Memory: 384 * gib},
				{Name: "l40s-shared", Machine: "pcie-4xl40s", Count: 1, CPU: 48 * core, Memory: 384 * gib, ShareUnits: 4},
				{Name: "a100-pcie", Machine: "pcie-8xa100-80gb", Count: 1, CPU: 128 * core, Memory: 1024 * gib},
			},
			Pods: mixedPods,
		},
	}
}

// ScenarioNames lists the built-in scenarios' names.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

// LookupScenarios returns the built-in scenarios named in a comma-separated list
// ("all" or "" for every one).
func LookupScenarios(list string) ([]Scenario, error) {
	all := Scenarios()
	if list == "" || list == "all" {
		return all, nil
	}
	var out []Scenario
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(all, func(s Scenario) bool { return s.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q: allowed values are %s or all", name, strings.Join(ScenarioNames(), ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}
