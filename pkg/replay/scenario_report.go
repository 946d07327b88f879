package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Output files written by SimulateScenarios.
const (
	ScenarioRunsFile        = "scenario_runs.csv"
	ScenarioSummaryCSVFile  = "scenario_summary.csv"
	ScenarioSummaryJSONFile = "scenario_summary.json"
)

// ScenarioConfig is everything `gpu-scheduler simulate scenarios` does, as values.
type ScenarioConfig struct {
	Scenarios []Scenario
	Policies  []Policy
	Seeds     []int64
	// OutDir receives the CSV and JSON files; empty writes none.
	OutDir string
}

// Validate checks the configuration; messages name the setting at fault.
func (c *ScenarioConfig) Validate() error {
	var errs []error
	if len(c.Scenarios) == 0 {
		errs = append(errs, fmt.Errorf("scenario: at least one is required: %s", strings.Join(ScenarioNames(), ", ")))
	}
	if len(c.Policies) == 0 {
		errs = append(errs, errors.New("policy: at least one is required"))
	}
	if len(c.Seeds) == 0 {
		errs = append(errs, errors.New("seeds: at least one seed is required"))
	}
	for i := range c.Scenarios {
		if err := c.Scenarios[i].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("scenario %s: %w", c.Scenarios[i].Name, err))
		}
	}
	return errors.Join(errs...)
}

// ScenarioSummary is one scenario under one policy, over the seeds: counts are
// means per run, percentages are pooled over the runs.
type ScenarioSummary struct {
	Scenario string  `json:"scenario"`
	Policy   string  `json:"policy"`
	Seeds    int     `json:"seeds"`
	Pods     float64 `json:"pods"`
	Failed   float64 `json:"failed"`
	// AllocPct is the GPU capacity held at the end, in percent.
	AllocPct float64 `json:"allocPct"`
	// BestInterconnectPct is the share of multi-GPU pods whose set ranked
	// with the best set any feasible node offered (topology.Quality);
	// NVLinkPct the share, among multi-GPU pods for which some feasible node
	// offered an all-NVLink set, that got one.
	BestInterconnectPct float64  `json:"bestInterconnectPct"`
	NVLinkPct           float64  `json:"nvlinkPct"`
	MultiGPU            float64  `json:"multiGpu"`
	PremiumPods         float64  `json:"premiumPods"`
	PremiumGPUs         float64  `json:"premiumGpus"`
	FreeGPUs            float64  `json:"freeGpus"`
	Stranded            Stranded `json:"stranded"`
	StrandedTotal       float64  `json:"strandedTotal"`
}

// SummarizeScenarios groups results by scenario and policy, in first-seen order.
func SummarizeScenarios(results []*ScenarioResult) []ScenarioSummary {
	type acc struct {
		s                           ScenarioSummary
		alloc, cap                  float64
		multi, best, nvAvail, nvGot int
	}
	groups := grouped(results, func(r *ScenarioResult) [2]string { return [2]string{r.Scenario, r.Policy} },
		func(r *ScenarioResult) *acc { return &acc{s: ScenarioSummary{Scenario: r.Scenario, Policy: r.Policy}} })
	for i, r := range results {
		a := groups.of[i]
		a.s.Seeds++
		a.s.Pods += float64(r.Pods)
		a.s.Failed += float64(r.Failed)
		a.alloc += r.AllocatedGPUs
		a.cap += r.CapacityGPUs
		a.multi += r.MultiGPU
		a.best += r.BestInterconnect
		a.nvAvail += r.NVLinkAvailable
		a.nvGot += r.NVLinked
		a.s.PremiumPods += float64(r.PremiumPods)
		a.s.PremiumGPUs += r.PremiumGPUs
		a.s.FreeGPUs += r.FreeGPUs
		a.s.Stranded.CPU += r.Stranded.CPU
		a.s.Stranded.Product += r.Stranded.Product
		a.s.Stranded.MIGGeometry += r.Stranded.MIGGeometry
		a.s.Stranded.ShareSliver += r.Stranded.ShareSliver
		a.s.Stranded.SetSize += r.Stranded.SetSize
	}
	out := make([]ScenarioSummary, 0, len(groups.order))
	for _, a := range groups.order {
		n := float64(a.s.Seeds)
		s := a.s
		s.Pods /= n
		s.Failed /= n
		s.MultiGPU = float64(a.multi) / n
		s.PremiumPods /= n
		s.PremiumGPUs /= n
		s.FreeGPUs /= n
		s.Stranded = Stranded{CPU: s.Stranded.CPU / n, Product: s.Stranded.Product / n, MIGGeometry: s.Stranded.MIGGeometry / n,
			ShareSliver: s.Stranded.ShareSliver / n, SetSize: s.Stranded.SetSize / n}
		s.StrandedTotal = s.Stranded.Total()
		s.AllocPct = 100 * a.alloc / a.cap
		s.BestInterconnectPct, s.NVLinkPct = pooledPct(a.best, a.multi), pooledPct(a.nvGot, a.nvAvail)
		out = append(out, s)
	}
	return out
}

func pooledPct(n, d int) float64 {
	if d == 0 {
		return 100
	}
	return 100 * float64(n) / float64(d)
}

// WriteScenarioTable prints one table per scenario.
func WriteScenarioTable(w io.Writer, sums []ScenarioSummary) error {
	var scenarios []string
	for _, s := range sums {
		if !slices.Contains(scenarios, s.Scenario) {
			scenarios = append(scenarios, s.Scenario)
		}
	}
	for i, name := range scenarios {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return fmt.Errorf("writing table: %w", err)
			}
		}
		if _, err := fmt.Fprintf(w, "scenario %s (stranded: free GPUs a failed pod kind wanted, by cause)\n", name); err != nil {
			return fmt.Errorf("writing table: %w", err)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "policy\talloc %\tfailed pods\tbest interconnect %\tall-NVLink %\tpremium GPUs\tpremium pods\tstranded cpu\tproduct\tmig\tshare\tset-size\ttotal")
		for _, s := range sums {
			if s.Scenario != name {
				continue
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n",
				s.Policy, s.AllocPct, s.Failed, s.BestInterconnectPct, s.NVLinkPct, s.PremiumGPUs, s.PremiumPods,
				s.Stranded.CPU, s.Stranded.Product, s.Stranded.MIGGeometry, s.Stranded.ShareSliver, s.Stranded.SetSize, s.StrandedTotal)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("writing table: %w", err)
		}
	}
	return nil
}

// SimulateScenarios runs every scenario under every policy and seed, writes the
// per-run and summary files into cfg.OutDir and prints the tables to w.
func SimulateScenarios(ctx context.Context, cfg ScenarioConfig, w io.Writer) ([]ScenarioSummary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid scenario settings: %w", err)
	}
	var results []*ScenarioResult
	for i := range cfg.Scenarios {
		for _, p := range cfg.Policies {
			for _, seed := range cfg.Seeds {
				r, err := RunScenario(ctx, &cfg.Scenarios[i], p, seed)
				if err != nil {
					return nil, err
				}
				results = append(results, r)
			}
		}
	}
	sums := SummarizeScenarios(results)
	if cfg.OutDir != "" {
		if err := writeScenarioOutputs(cfg, results, sums); err != nil {
			return nil, err
		}
	}
	return sums, WriteScenarioTable(w, sums)
}

func f4(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }

func writeScenarioOutputs(cfg ScenarioConfig, results []*ScenarioResult, sums []ScenarioSummary) error {
	runs := [][]string{{"scenario", "policy", "seed", "pods", "placed", "failed", "capacity_gpus", "allocated_gpus", "alloc_pct",
		"multi_gpu", "best_interconnect", "nvlink_available", "nvlinked", "premium_pods", "premium_gpus", "free_gpus",
		"stranded_cpu", "stranded_product", "stranded_mig_geometry", "stranded_share_sliver", "stranded_set_size", "failed_by_kind"}}
	for _, r := range results {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(r.FailedByKind)) {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, r.FailedByKind[k]))
		}
		runs = append(runs, []string{r.Scenario, r.Policy, strconv.FormatInt(r.Seed, 10), strconv.Itoa(r.Pods), strconv.Itoa(r.Placed),
			strconv.Itoa(r.Failed), f4(r.CapacityGPUs), f4(r.AllocatedGPUs), f4(r.AllocPct()), strconv.Itoa(r.MultiGPU),
			strconv.Itoa(r.BestInterconnect), strconv.Itoa(r.NVLinkAvailable), strconv.Itoa(r.NVLinked), strconv.Itoa(r.PremiumPods),
			f4(r.PremiumGPUs), f4(r.FreeGPUs), f4(r.Stranded.CPU), f4(r.Stranded.Product), f4(r.Stranded.MIGGeometry),
			f4(r.Stranded.ShareSliver), f4(r.Stranded.SetSize), strings.Join(kinds, ";")})
	}
	summary := [][]string{{"scenario", "policy", "seeds", "pods_mean", "failed_mean", "alloc_pct", "best_interconnect_pct", "nvlink_pct",
		"premium_gpus_mean", "premium_pods_mean", "stranded_cpu", "stranded_product", "stranded_mig_geometry", "stranded_share_sliver",
		"stranded_set_size", "stranded_total", "free_gpus_mean"}}
	for _, s := range sums {
		summary = append(summary, []string{s.Scenario, s.Policy, strconv.Itoa(s.Seeds), f4(s.Pods), f4(s.Failed), f4(s.AllocPct),
			f4(s.BestInterconnectPct), f4(s.NVLinkPct), f4(s.PremiumGPUs), f4(s.PremiumPods), f4(s.Stranded.CPU), f4(s.Stranded.Product),
			f4(s.Stranded.MIGGeometry), f4(s.Stranded.ShareSliver), f4(s.Stranded.SetSize), f4(s.StrandedTotal), f4(s.FreeGPUs)})
	}
	doc := struct {
		Scenarios []Scenario        `json:"scenarios"`
		Seeds     []int64           `json:"seeds"`
		Results   []ScenarioSummary `json:"results"`
	}{cfg.Scenarios, cfg.Seeds, sums}
	return writeFiles(cfg.OutDir, map[string]func(io.Writer) error{
		ScenarioRunsFile:        func(w io.Writer) error { return writeCSV(w, runs) },
		ScenarioSummaryCSVFile:  func(w io.Writer) error { return writeCSV(w, summary) },
		ScenarioSummaryJSONFile: func(w io.Writer) error { return writeJSON(w, doc) },
	})
}
