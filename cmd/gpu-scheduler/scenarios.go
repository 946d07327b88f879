package main

import (
	"context"
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tessera-gpu/tessera/pkg/replay"
)

const scenariosLong = `Run synthetic clusters and workloads that the openb traces cannot express under
Tessera's scoring (pkg/scoring, the scorer the trace replay and the
scheduler run) and baseline policies, and report what the
trace replay cannot measure.

Built-in scenarios (--scenario):
  mixed   20 DGX H100 (4 MIG-partitioned: 1g.10gb, 2g.20gb and 3g.40gb slices),
          2 DGX H200, 8 PCIe L40S servers on two NUMA nodes, 4 time-shared L40S
          servers (4 units per GPU), 2 PCIe A100 80GB servers (NVLink pairs)
  small   the same kinds of node, 9 nodes
Workload (both): 8/4/2-GPU training limited to NVLink products, 2-GPU
fine-tuning on any product, 1g/2g/3g MIG inference, 1- and 2-unit notebooks,
1-GPU serving allowed on L40S/A100/H100, CPU-heavy 1-GPU preprocessing and
H200-only pods. Pods arrive in a seeded order until their GPU demand reaches
1.1 times the capacity; they never leave. The machines are the simulated
ones of the gpu agent (sim:dgx-h100, sim:pcie-4xl40s, ...).

Policies (--policy): tessera (the combined score: product, interconnect,
NVLink islands kept, fragmentation, packing; devices from pkg/topology's
allocator), fgd (fragmentation only, lowest-index devices), bestfit (least
CPU and GPU left), random.

Reported per scenario and policy (mean over seeds):
  alloc %              GPU capacity held at the end
  best interconnect %  multi-GPU pods whose set ranks with the best set any
                       feasible node offered at that moment
  all-NVLink %         multi-GPU pods that got an all-NVLink set, among those
                       for which a feasible node offered one
  premium GPUs/pods    GPUs given to pods while a feasible node with a cheaper
                       allowed product (and, for an all-NVLink set, such a set)
                       existed
  stranded             free GPUs at the end that a pod kind which failed
                       wanted, by cause: cpu (the node's CPU or memory is
                       short), product (the kind may not use the product), mig
                       (no slice of its profile), share (too few free units),
                       set-size (too few free GPUs on the node)

Outputs in --out: scenario_runs.csv (one row per run), scenario_summary.csv and
scenario_summary.json (with the scenarios' definitions); the tables go to
stdout.`

type scenariosOptions struct {
	scenario string
	policy   string
	seeds    string
	out      string
}

func newScenariosCommand() *cobra.Command {
	o := &scenariosOptions{}
	cmd := &cobra.Command{
		Use:     "scenarios --out DIR [--scenario NAME] [--policy LIST] [--seeds LIST]",
		Short:   "Run synthetic MIG/NVLink/shared-GPU scenarios under Tessera and baseline policies",
		Long:    scenariosLong,
		Example: "  gpu-scheduler simulate scenarios --scenario mixed --seeds 42-51 --out _output/scenarios",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			_, err = replay.SimulateScenarios(ctx, cfg, cmd.OutOrStdout())
			return err
		},
	}
	cmd.SetHelpFunc((&cobra.Command{}).HelpFunc())
	cmd.SetUsageFunc((&cobra.Command{}).UsageFunc())
	f := cmd.Flags()
	f.StringVar(&o.scenario, "scenario", "mixed", "comma-separated scenarios: "+strings.Join(replay.ScenarioNames(), ", ")+", or all")
	f.StringVar(&o.policy, "policy", "all", "comma-separated policies: tessera, fgd, bestfit, random, or all")
	f.StringVar(&o.seeds, "seeds", "42-51", "seeds: a list of integers and ranges, e.g. 42-51 or 1,5,7-9")
	f.StringVar(&o.out, "out", "", "output directory for scenario_runs.csv, scenario_summary.csv and scenario_summary.json (created if missing)")
	return cmd
}

func (o *scenariosOptions) config() (replay.ScenarioConfig, error) {
	var cfg replay.ScenarioConfig
	if o.out == "" {
		return cfg, fmt.Errorf("--out is required: the output directory")
	}
	cfg.OutDir = o.out
	var err error
	if cfg.Scenarios, err = replay.LookupScenarios(o.scenario); err != nil {
		return cfg, fmt.Errorf("--scenario: %w", err)
	}
	if cfg.Policies, err = replay.ParseScenarioPolicies(o.policy); err != nil {
		return cfg, fmt.Errorf("--policy: %w", err)
	}
	if cfg.Seeds, err = replay.ParseSeeds(o.seeds); err != nil {
		return cfg, fmt.Errorf("--seeds: %w", err)
	}
	return cfg, nil
}
