package replay

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"time"
)

// ProgressMode says how Simulate reports finished replays.
type ProgressMode string

// Progress modes.
const (
	ProgressBar   ProgressMode = "bar"   // a bar redrawn in place (terminals)
	ProgressLines ProgressMode = "lines" // one plain line per replay (logs)
	ProgressNone  ProgressMode = "none"
)

// SimulateConfig is everything `gpu-scheduler simulate` does, as values.
type SimulateConfig struct {
	NodesFile string
	PodFiles  []string
	Policies  []Policy
	Seeds     []int64
	Tune      float64
	OutDir    string
	// AnchorFile, when set, is a CSV of published values to compare with.
	AnchorFile string
	// Tolerance, when positive and an anchor is given, makes Simulate fail
	// if any |ours − anchor| at 130 % exceeds it (after writing the outputs).
	Tolerance float64
	Parallel  int
	Progress  ProgressMode
	// MaxIssues bounds the input problems printed per file (the counts are
	// always printed); negative prints all.
	MaxIssues int
	// Bound also computes, per trace, UpperBound on the same arrival orders
	// (mean over the seeds) into the summaries and the charts.
	Bound bool
}

// inputErrors checks the settings every trace experiment has: the files,
// the seeds and the tuning; messages name the setting at fault.
func inputErrors(nodes string, pods []string, seeds []int64, tune float64) []string {
	var errs []string
	if nodes == "" {
		errs = append(errs, "nodes: a node csv is required")
	}
	if len(pods) == 0 {
		errs = append(errs, "pods: at least one pod csv is required")
	}
	if len(seeds) == 0 {
		errs = append(errs, "seeds: at least one seed is required")
	}
	if tune < 0 || math.IsNaN(tune) || math.IsInf(tune, 0) {
		errs = append(errs, fmt.Sprintf("tune: %v is not a non-negative number (1.3 tunes to 130%% of GPU capacity, 0 turns tuning off)", tune))
	}
	return errs
}

// Validate checks the configuration; messages name the setting at fault.
func (c *SimulateConfig) Validate() error {
	errs := inputErrors(c.NodesFile, c.PodFiles, c.Seeds, c.Tune)
	if len(c.Policies) == 0 {
		errs = append(errs, "policy: at least one policy is required: "+strings.Join(PolicyNames(), ", "))
	}
	if c.OutDir == "" {
		errs = append(errs, "out: an output directory is required")
	}
	if c.Tolerance < 0 {
		errs = append(errs, fmt.Sprintf("tolerance: %v is negative", c.Tolerance))
	}
	switch c.Progress {
	case ProgressBar, ProgressLines, ProgressNone, "":
	default:
		errs = append(errs, fmt.Sprintf("progress: unknown mode %q: allowed values are bar, lines, none", c.Progress))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid simulate settings: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Simulate loads the inputs, replays every trace under every policy and seed,
// writes runs.csv, summary.csv and summary.json into the output directory and
// the summary table to stdout. Input problems, progress and the counts of
// skipped rows go to stderr.
func Simulate(ctx context.Context, cfg SimulateConfig, stdout, stderr io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cluster, err := LoadCluster(cfg.NodesFile)
	if err != nil {
		return fmt.Errorf("loading nodes: %w", err)
	}
	if err := WriteIssues(stderr, cfg.NodesFile, &cluster.Issues, cfg.MaxIssues); err != nil {
		return err
	}
	var traces []*Trace
	names := map[string]string{}
	for _, f := range cfg.PodFiles {
		t, err := LoadTrace(f, cluster)
		if err != nil {
			return fmt.Errorf("loading pods: %w", err)
		}
		if prev, dup := names[t.Name]; dup {
			return fmt.Errorf("pods: %s and %s both give trace name %q", prev, f, t.Name)
		}
		names[t.Name] = f
		if err := WriteIssues(stderr, f, &t.Issues, cfg.MaxIssues); err != nil {
			return err
		}
		traces = append(traces, t)
	}
	var anchors Anchors
	if cfg.AnchorFile != "" {
		if anchors, err = LoadAnchors(cfg.AnchorFile); err != nil {
			return fmt.Errorf("loading anchor: %w", err)
		}
	}

	exp := &Experiment{Cluster: cluster, Traces: traces, Policies: cfg.Policies, Seeds: cfg.Seeds,
		Tune: cfg.Tune, Parallel: cfg.Parallel}
	switch cfg.Progress {
	case ProgressBar, ProgressLines:
		exp.Progress = NewProgress(stderr, cfg.Progress == ProgressBar).Update
	}
	start := time.Now()
	results, err := exp.Run(ctx)
	if err != nil {
		return err
	}
	wall := time.Since(start)

	sums := Summarize(results, anchors)
	if cfg.Bound {
		bounds := map[string]float64{}
		par := cfg.Parallel
		if par <= 0 {
			par = runtime.GOMAXPROCS(0)
		}
		for _, t := range traces {
			runs, err := BoundSeeds(ctx, cluster, t, cfg.Seeds, cfg.Tune, BoundOptions{MinWidth: DefaultBoundMinWidth}, par, nil)
			if err != nil {
				return fmt.Errorf("bounding trace %s: %w", t.Name, err)
			}
			var total float64
			for _, r := range runs {
				total += r.Percent
			}
			bounds[t.Name] = total / float64(len(runs))
			if _, err := fmt.Fprintf(stderr, "upper bound on %s (any policy, mean of %d seeds): %.3f %%\n", t.Name, len(runs), bounds[t.Name]); err != nil {
				return fmt.Errorf("writing report: %w", err)
			}
		}
		SetBounds(sums, bounds)
	}
	doc := SummaryDoc{Nodes: cfg.NodesFile, Pods: cfg.PodFiles, Tune: cfg.Tune, Seeds: cfg.Seeds,
		Anchor: cfg.AnchorFile, Results: sums}
	maxDiff, haveDiff := MaxAbsDiff130(sums)
	if haveDiff {
		doc.MaxAbsDiff130 = ptr(maxDiff)
	}
	if err := WriteOutputs(cfg.OutDir, results, doc); err != nil {
		return err
	}
	if err := WriteTable(stdout, sums); err != nil {
		return err
	}

	var replayWall time.Duration
	failed := 0
	for _, r := range results {
		replayWall += r.Wall
		failed += r.Failed
	}
	if _, err := fmt.Fprintf(stderr, "%d replays in %s (%.3f s per replay on average); %d pod arrivals found no node (failed_pods_mean in %s)\n",
		len(results), wall.Round(time.Millisecond), replayWall.Seconds()/float64(len(results)), failed, SummaryCSVFile); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	skipped, warned := cluster.Issues.Skipped(), cluster.Issues.Warned()
	for _, t := range traces {
		skipped += t.Issues.Skipped()
		warned += t.Issues.Warned()
	}
	if _, err := fmt.Fprintf(stderr, "input rows skipped: %d; kept with a warning: %d\n", skipped, warned); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	if haveDiff {
		if _, err := fmt.Fprintf(stderr, "largest |ours - anchor| at 130%%: %.3f percentage points\n", maxDiff); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
		var missing []string
		for _, s := range sums {
			if s.Anchor130 != nil && s.Diff130 == nil {
				missing = append(missing, s.Trace+"/"+s.Policy)
			}
		}
		if cfg.Tolerance > 0 && len(missing) > 0 {
			return fmt.Errorf("no allocation at 130%% to compare with the anchor for %s", strings.Join(missing, ", "))
		}
		if cfg.Tolerance > 0 && maxDiff > cfg.Tolerance {
			var off []string
			for _, s := range sums {
				if s.Diff130 != nil && math.Abs(*s.Diff130) > cfg.Tolerance {
					off = append(off, fmt.Sprintf("%s/%s %+.2f", s.Trace, s.Policy, *s.Diff130))
				}
			}
			return fmt.Errorf("replay differs from the anchor by more than %.2f percentage points at 130%%: %s",
				cfg.Tolerance, strings.Join(off, ", "))
		}
	}
	return nil
}
