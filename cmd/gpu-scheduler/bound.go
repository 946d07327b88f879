package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tessera-gpu/tessera/pkg/replay"
)

const boundLong = `Compute, per seed, an upper bound on the final GPU allocation that any placement
policy (even one that knows the future) can reach under the replay's protocol, on
the same arrival order as ` + "`simulate`" + ` (same seeds and --tune). Every allocation
sample is at most the final allocation, so the bound also caps the allocation at
130 % arrived demand (up to 0.01 pp: the curve rounds to 0.01 %).

The argument: pods never leave and a pod is placed whenever some node fits it.
For a corner C = (cpu, memory) (--corners), let T be the arrival of the last
placed 1000-milli GPU pod with at least C's CPU and memory. Its node had a whole
free GPU and C's CPU and memory at every earlier arrival, so every shared pod
without a gpu_spec that asks no more than C and arrives before T was placed, and
no such whole-GPU pod arriving after T was. A GPU ends with one whole-GPU pod or
shared pods summing to at most 1000 milli. For a box of T values, a
configuration LP (GPUs per multiset of share sizes, GPUs given to whole pods)
bounds every run in the box; CPU, memory per node and the order of partners are
relaxed away. A best-first branch and bound over the boxes stops when the best
box is narrower than --min-width of the capacity in arrived demand; its LP value
bounds every run. The LP value printed is its dual bound (weak duality).

Printed per seed: the bound (% of GPU capacity), the box (arrival indices of T
per corner), the LPs solved and the wall time; then the mean per trace. With
--out, bound.csv and bound.json are written there.`

const boundExample = `  gpu-scheduler simulate bound --nodes traces/openb_node_list_gpu_node.csv \
    --pods traces/openb_pod_list_default.csv --seeds 42-51 --tune 1.3 --out _output/bound`

type boundOptions struct {
	nodes     string
	pods      []string
	seeds     string
	tune      float64
	out       string
	minWidth  float64
	corners   string
	maxLPs    int
	parallel  int
	maxIssues int
}

func newBoundCommand() *cobra.Command {
	o := &boundOptions{}
	cmd := &cobra.Command{
		Use:     "bound --nodes NODES.csv --pods PODS.csv[,PODS2.csv] [flags]",
		Short:   "Upper bound on the GPU allocation any placement policy can reach on a trace (FGD protocol)",
		Long:    boundLong,
		Example: boundExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return o.run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodes, "nodes", "", "node CSV (columns sn, cpu_milli, memory_mib, gpu, model)")
	f.StringSliceVar(&o.pods, "pods", nil, "pod CSV(s), comma-separated or repeated")
	f.StringVar(&o.seeds, "seeds", "42-51", "seeds: a list of integers and ranges, e.g. 42-51 or 1,5,7-9")
	f.Float64Var(&o.tune, "tune", replay.DefaultTune, "tune the total GPU demand to this multiple of the cluster's GPU capacity; 0 keeps the trace as it is")
	f.StringVar(&o.out, "out", "", "optional output directory for bound.csv and bound.json (created if missing)")
	f.Float64Var(&o.minWidth, "min-width", replay.DefaultBoundMinWidth, "stop when the best box is at most this wide (arrived demand as a fraction of GPU capacity); 0 splits down to single arrivals")
	f.StringVar(&o.corners, "corners", formatCorners(replay.DefaultBoundCorners), "corners of the argument: comma-separated cpu_milli:memory_mib pairs")
	f.IntVar(&o.maxLPs, "max-lps", 20000, "fail a seed after this many LPs (0: no limit)")
	f.IntVar(&o.parallel, "parallel", 0, "seeds bounded at once (0: GOMAXPROCS)")
	f.IntVar(&o.maxIssues, "max-issues", 20, "input problems printed per file (-1 prints all)")
	return cmd
}

func formatCorners(cs []replay.Corner) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%d:%d", c.CPU, c.Memory)
	}
	return strings.Join(parts, ",")
}

func parseCorners(s string) ([]replay.Corner, error) {
	var cs []replay.Corner
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		cpu, mem, ok := strings.Cut(part, ":")
		c, err1 := strconv.ParseInt(cpu, 10, 64)
		m, err2 := strconv.ParseInt(mem, 10, 64)
		if !ok || err1 != nil || err2 != nil || c < 0 || m < 0 {
			return nil, fmt.Errorf("--corners: %q is not a cpu_milli:memory_mib pair of non-negative integers", part)
		}
		cs = append(cs, replay.Corner{CPU: c, Memory: m})
	}
	return cs, nil
}

// run turns the flags into the bound's settings (errors name the flag) and
// runs it.
func (o *boundOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg := replay.BoundConfig{NodesFile: o.nodes, Tune: o.tune, OutDir: o.out, Parallel: o.parallel, MaxIssues: o.maxIssues,
		Options: replay.BoundOptions{MinWidth: o.minWidth, MaxLPs: o.maxLPs}}
	for _, p := range o.pods {
		if p = strings.TrimSpace(p); p != "" {
			cfg.PodFiles = append(cfg.PodFiles, p)
		}
	}
	switch {
	case o.nodes == "":
		return fmt.Errorf("--nodes is required: the node csv")
	case len(cfg.PodFiles) == 0:
		return fmt.Errorf("--pods is required: one or more pod csv files, comma-separated")
	case o.tune < 0 || math.IsNaN(o.tune) || math.IsInf(o.tune, 0):
		return fmt.Errorf("--tune %v: want a non-negative number (1.3 tunes to 130%% of GPU capacity, 0 turns tuning off)", o.tune)
	case o.minWidth < 0 || math.IsNaN(o.minWidth):
		return fmt.Errorf("--min-width %v: want 0 or a positive fraction of the GPU capacity", o.minWidth)
	case o.maxLPs < 0:
		return fmt.Errorf("--max-lps %d: want 0 (no limit) or a positive number", o.maxLPs)
	case o.parallel < 0:
		return fmt.Errorf("--parallel %d: want 0 (GOMAXPROCS) or a positive number", o.parallel)
	}
	var err error
	if cfg.Seeds, err = replay.ParseSeeds(o.seeds); err != nil {
		return fmt.Errorf("--seeds: %w", err)
	}
	if cfg.Options.Corners, err = parseCorners(o.corners); err != nil {
		return err
	}
	return replay.Bound(ctx, cfg, stdout, stderr)
}
