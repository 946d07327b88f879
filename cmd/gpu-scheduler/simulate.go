package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tessera-gpu/tessera/pkg/replay"
)

const simulateLong = `Replay openb GPU-cluster traces (the Alibaba cluster-trace-gpu-v2023 node and pod
CSVs) under the FGD paper's protocol and report the GPU allocation ratio that
each placement policy reaches.

For each pod CSV, policy and seed the replay:
  - seeds one math/rand stream, shuffles the pods into an arrival order and tunes
    the total GPU demand to --tune times the cluster's GPU capacity (appending
    random copies of pods, or removing random pods);
  - schedules the pods one at a time, never departing: a pod goes to the feasible
    node (CPU, memory, pod count, GPU model from gpu_spec, free GPUs) with the
    highest integer score, ties to a per-seed random node rank; a pod that fits
    nowhere fails and is not retried;
  - samples the allocated GPU capacity after every pod and averages it at each
    whole percent X = 0..130 of arrived demand.

Policies: random, dotprod, gpuclustering, gpupacking, bestfit, fgd (all means
these six baselines), and tessera: Tessera's placement policy, pkg/scoring's
Scorer (the code the scheduler plugin runs) on the trace's nodes described as
the plugin sees them: the drop in fragmentation against a target workload
learned online from arriving pods, plus GPU capacity stranded by the node's
CPU, the expected residue of partly used GPUs, and the cost of taking a GPU
model that gpu_spec pods need. Its target starts from the trace's shape
distribution (the protocol's, as FGD gets); tessera-online starts from
nothing and learns from arriving pods only (as the scheduler does on an
empty cluster), tessera-cross starts from another trace's distribution (the
one half-way round the --pods list).

With --bound, each trace also gets an upper bound on the final allocation of
any policy on the same arrival orders (mean over the seeds; see simulate bound
--help), in summary.csv/json (bound_at_130) and on the charts.

Outputs in --out:
  runs.csv      one row per replay: trace, policy, seed, pods, placed, failed and
                the allocation % at X = 0..130
  summary.csv   one row per trace and policy: mean allocation % at 100 and 130
                over the seeds, seed count, failed pods, wall time and, with
                --anchor, the published value and the difference; with --bound,
                the upper bound
  summary.json  the same, with the settings used
  curve_<trace>.svg  allocation % against arrived demand, one line per policy
                (mean over seeds); curve_<trace>_zoom.svg the same from 80 %
The summary table is also printed on stdout. Rows that cannot be read are
reported as file:line on stderr and skipped; the counts are printed at the end.
Progress goes to stderr: a bar on a terminal, one line per replay otherwise.

Subcommands:
  scenarios  synthetic clusters the traces cannot express (MIG layouts, NVLink
             islands, time-shared GPUs, product constraints): gpu-scheduler
             simulate scenarios --help
  bound      the upper bound alone, per seed: gpu-scheduler simulate bound --help`

const simulateExample = `  # The FGD paper's matrix on one trace, compared with the published numbers:
  gpu-scheduler simulate --nodes traces/openb_node_list_gpu_node.csv \
    --pods traces/openb_pod_list_default.csv --policy all --seeds 42-51 \
    --anchor pkg/replay/testdata/fgd-anchor.csv --out _output/placement

  # Two traces, two policies, three seeds, no tuning:
  gpu-scheduler simulate --nodes nodes.csv --pods a.csv,b.csv \
    --policy fgd,bestfit --seeds 1,2,7 --tune 0 --out /tmp/sim`

type simulateOptions struct {
	nodes     string
	pods      []string
	policy    string
	seeds     string
	tune      float64
	out       string
	anchor    string
	tolerance float64
	parallel  int
	progress  string
	maxIssues int
	bound     bool
}

func newSimulateCommand() *cobra.Command {
	o := &simulateOptions{}
	cmd := &cobra.Command{
		Use:     "simulate --nodes NODES.csv --pods PODS.csv[,PODS2.csv] --out DIR [flags]",
		Short:   "Replay GPU-cluster traces under placement policies (FGD protocol) and report allocation",
		Long:    simulateLong,
		Example: simulateExample,
		Args:    cobra.NoArgs,
		// The scheduler command's hook sets up its logging; a replay reports on
		// stderr itself, and without that hook errors print as plain lines.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return replay.Simulate(ctx, cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	// The kube-scheduler command's help lists its own flag sections; this
	// command uses cobra's defaults.
	cmd.SetHelpFunc((&cobra.Command{}).HelpFunc())
	cmd.SetUsageFunc((&cobra.Command{}).UsageFunc())

	cmd.AddCommand(newScenariosCommand())
	cmd.AddCommand(newBoundCommand())

	f := cmd.Flags()
	f.StringVar(&o.nodes, "nodes", "", "node CSV (columns sn, cpu_milli, memory_mib, gpu, model)")
	f.StringSliceVar(&o.pods, "pods", nil, "pod CSV(s), comma-separated or repeated (columns name, cpu_milli, memory_mib, num_gpu, gpu_milli, optional gpu_spec); the trace name is the file name without openb_pod_list_ and .csv")
	f.StringVar(&o.policy, "policy", "all", "comma-separated policies: "+strings.Join(replay.PolicyNames(), ", ")+", or all")
	f.StringVar(&o.seeds, "seeds", "42-51", "seeds: a list of integers and ranges, e.g. 42-51 or 1,5,7-9")
	f.Float64Var(&o.tune, "tune", replay.DefaultTune, "tune the total GPU demand to this multiple of the cluster's GPU capacity; 0 replays the trace as it is")
	f.StringVar(&o.out, "out", "", "output directory for runs.csv, summary.csv and summary.json (created if missing)")
	f.StringVar(&o.anchor, "anchor", "", "optional CSV of published values (trace, policy, alloc_pct_at_100, alloc_pct_at_130) to compare with")
	f.Float64Var(&o.tolerance, "tolerance", 0, "with --anchor: fail when |ours - anchor| at 130% exceeds this many percentage points (0: report only)")
	f.IntVar(&o.parallel, "parallel", 0, "replays run at once (0: GOMAXPROCS)")
	f.StringVar(&o.progress, "progress", "auto", "progress on stderr: auto (bar on a terminal, lines otherwise), bar, lines or none")
	f.IntVar(&o.maxIssues, "max-issues", 20, "input problems printed per file (counts are always printed; -1 prints all)")
	f.BoolVar(&o.bound, "bound", false, "also compute each trace's upper bound on any policy's allocation (simulate bound) into the summary and the charts")
	return cmd
}

// config turns the flags into the replay's settings; errors name the flag
// and its allowed values.
func (o *simulateOptions) config() (replay.SimulateConfig, error) {
	cfg := replay.SimulateConfig{
		NodesFile: o.nodes, Tune: o.tune, OutDir: o.out, AnchorFile: o.anchor,
		Tolerance: o.tolerance, Parallel: o.parallel, MaxIssues: o.maxIssues, Bound: o.bound,
	}
	for _, p := range o.pods {
		if p = strings.TrimSpace(p); p != "" {
			cfg.PodFiles = append(cfg.PodFiles, p)
		}
	}
	switch {
	case o.nodes == "":
		return cfg, fmt.Errorf("--nodes is required: the node csv")
	case len(cfg.PodFiles) == 0:
		return cfg, fmt.Errorf("--pods is required: one or more pod csv files, comma-separated")
	case o.out == "":
		return cfg, fmt.Errorf("--out is required: the output directory")
	case o.tune < 0 || math.IsNaN(o.tune) || math.IsInf(o.tune, 0):
		return cfg, fmt.Errorf("--tune %v: want a non-negative number (1.3 tunes to 130%% of GPU capacity, 0 turns tuning off)", o.tune)
	case o.tolerance < 0:
		return cfg, fmt.Errorf("--tolerance %v: want 0 (report only) or a positive number of percentage points", o.tolerance)
	case o.parallel < 0:
		return cfg, fmt.Errorf("--parallel %d: want 0 (GOMAXPROCS) or a positive number", o.parallel)
	}
	var err error
	if cfg.Policies, err = replay.ParsePolicies(o.policy); err != nil {
		return cfg, fmt.Errorf("--policy: %w", err)
	}
	if cfg.Seeds, err = replay.ParseSeeds(o.seeds); err != nil {
		return cfg, fmt.Errorf("--seeds: %w", err)
	}
	switch o.progress {
	case "auto":
		cfg.Progress = replay.ProgressLines
		if stderrIsTerminal() {
			cfg.Progress = replay.ProgressBar
		}
	case string(replay.ProgressBar), string(replay.ProgressLines), string(replay.ProgressNone):
		cfg.Progress = replay.ProgressMode(o.progress)
	default:
		return cfg, fmt.Errorf("--progress %q: allowed values are auto, bar, lines, none", o.progress)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("checking flags: %w", err)
	}
	return cfg, nil
}

func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
