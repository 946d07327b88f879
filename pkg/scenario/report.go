package scenario

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Output files written by Simulate.
const (
	RunsCSVFile    = "scenario_runs.csv"
	SummaryCSVFile = "scenario_summary.csv"
	SummaryJSON    = "scenario_summary.json"
)

// Config is everything `gpu-scheduler simulate scenarios` does, as values.
type Config struct {
	Scenarios []Scenario
	Policies  []Policy
	Seeds     []int64
	// OutDir receives the CSV and JSON files; empty writes none.
	OutDir string
}

// Validate checks the configuration; messages name the setting at fault.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Scenarios) == 0 {
		errs = append(errs, fmt.Errorf("scenario: at least one is required: %s", strings.Join(Names(), ", ")))
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

// Summary is one scenario under one policy, over the seeds: counts are
// means per run, percentages are pooled over the runs.
type Summary struct {
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

// Summarize groups results by scenario and policy, in first-seen order.
func Summarize(results []*RunResult) []Summary {
	type acc struct {
		s                           Summary
		alloc, cap                  float64
		multi, best, nvAvail, nvGot int
	}
	var order []string
	accs := map[string]*acc{}
	for _, r := range results {
		k := r.Scenario + "\x00" + r.Policy
		a, ok := accs[k]
		if !ok {
			a = &acc{s: Summary{Scenario: r.Scenario, Policy: r.Policy}}
			accs[k] = a
			order = append(order, k)
		}
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
	out := make([]Summary, 0, len(order))
	for _, k := range order {
		a := accs[k]
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
		s.BestInterconnectPct, s.NVLinkPct = pct(a.best, a.multi), pct(a.nvGot, a.nvAvail)
		out = append(out, s)
	}
	return out
}

func pct(n, d int) float64 {
	if d == 0 {
		return 100
	}
	return 100 * float64(n) / float64(d)
}

// WriteTable prints one table per scenario.
func WriteTable(w io.Writer, sums []Summary) error {
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

// Simulate runs every scenario under every policy and seed, writes the
// per-run and summary files into cfg.OutDir and prints the tables to w.
func Simulate(ctx context.Context, cfg Config, w io.Writer) ([]Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid scenario settings: %w", err)
	}
	var results []*RunResult
	for i := range cfg.Scenarios {
		for _, p := range cfg.Policies {
			for _, seed := range cfg.Seeds {
				r, err := Run(ctx, &cfg.Scenarios[i], p, seed)
				if err != nil {
					return nil, err
				}
				results = append(results, r)
			}
		}
	}
	sums := Summarize(results)
	if cfg.OutDir != "" {
		if err := writeOutputs(cfg, results, sums); err != nil {
			return nil, err
		}
	}
	return sums, WriteTable(w, sums)
}

func f(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }

func writeOutputs(cfg Config, results []*RunResult, sums []Summary) error {
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	runs := [][]string{{"scenario", "policy", "seed", "pods", "placed", "failed", "capacity_gpus", "allocated_gpus", "alloc_pct",
		"multi_gpu", "best_interconnect", "nvlink_available", "nvlinked", "premium_pods", "premium_gpus", "free_gpus",
		"stranded_cpu", "stranded_product", "stranded_mig_geometry", "stranded_share_sliver", "stranded_set_size", "failed_by_kind"}}
	for _, r := range results {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(r.FailedByKind)) {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, r.FailedByKind[k]))
		}
		runs = append(runs, []string{r.Scenario, r.Policy, strconv.FormatInt(r.Seed, 10), strconv.Itoa(r.Pods), strconv.Itoa(r.Placed),
			strconv.Itoa(r.Failed), f(r.CapacityGPUs), f(r.AllocatedGPUs), f(r.AllocPct()), strconv.Itoa(r.MultiGPU),
			strconv.Itoa(r.BestInterconnect), strconv.Itoa(r.NVLinkAvailable), strconv.Itoa(r.NVLinked), strconv.Itoa(r.PremiumPods),
			f(r.PremiumGPUs), f(r.FreeGPUs), f(r.Stranded.CPU), f(r.Stranded.Product), f(r.Stranded.MIGGeometry),
			f(r.Stranded.ShareSliver), f(r.Stranded.SetSize), strings.Join(kinds, ";")})
	}
	summary := [][]string{{"scenario", "policy", "seeds", "pods_mean", "failed_mean", "alloc_pct", "best_interconnect_pct", "nvlink_pct",
		"premium_gpus_mean", "premium_pods_mean", "stranded_cpu", "stranded_product", "stranded_mig_geometry", "stranded_share_sliver",
		"stranded_set_size", "stranded_total", "free_gpus_mean"}}
	for _, s := range sums {
		summary = append(summary, []string{s.Scenario, s.Policy, strconv.Itoa(s.Seeds), f(s.Pods), f(s.Failed), f(s.AllocPct),
			f(s.BestInterconnectPct), f(s.NVLinkPct), f(s.PremiumGPUs), f(s.PremiumPods), f(s.Stranded.CPU), f(s.Stranded.Product),
			f(s.Stranded.MIGGeometry), f(s.Stranded.ShareSliver), f(s.Stranded.SetSize), f(s.StrandedTotal), f(s.FreeGPUs)})
	}
	for name, rows := range map[string][][]string{RunsCSVFile: runs, SummaryCSVFile: summary} {
		if err := writeCSV(filepath.Join(cfg.OutDir, name), rows); err != nil {
			return err
		}
	}
	doc := struct {
		Scenarios []Scenario `json:"scenarios"`
		Seeds     []int64    `json:"seeds"`
		Results   []Summary  `json:"results"`
	}{cfg.Scenarios, cfg.Seeds, sums}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", SummaryJSON, err)
	}
	if err := os.WriteFile(filepath.Join(cfg.OutDir, SummaryJSON), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", SummaryJSON, err)
	}
	return nil
}

func writeCSV(path string, rows [][]string) (err error) {
	file, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if cerr := file.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("writing %s: %w", path, cerr)
		}
	}()
	cw := csv.NewWriter(file)
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
