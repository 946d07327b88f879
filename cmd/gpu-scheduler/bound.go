package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
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

func (o *boundOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	var pods []string
	for _, p := range o.pods {
		if p = strings.TrimSpace(p); p != "" {
			pods = append(pods, p)
		}
	}
	switch {
	case o.nodes == "":
		return fmt.Errorf("--nodes is required: the node csv")
	case len(pods) == 0:
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
	seeds, err := replay.ParseSeeds(o.seeds)
	if err != nil {
		return fmt.Errorf("--seeds: %w", err)
	}
	corners, err := parseCorners(o.corners)
	if err != nil {
		return err
	}
	parallel := o.parallel
	if parallel == 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	opt := replay.BoundOptions{Corners: corners, MinWidth: o.minWidth, MaxLPs: o.maxLPs}

	cluster, err := replay.LoadCluster(o.nodes)
	if err != nil {
		return err
	}
	if err := replay.WriteIssues(stderr, o.nodes, &cluster.Issues, o.maxIssues); err != nil {
		return err
	}
	var all []replay.BoundRun
	for _, f := range pods {
		t, err := replay.LoadTrace(f, cluster)
		if err != nil {
			return err
		}
		if err := replay.WriteIssues(stderr, f, &t.Issues, o.maxIssues); err != nil {
			return err
		}
		runs, err := replay.BoundSeeds(ctx, cluster, t, seeds, o.tune, opt, parallel, func(r replay.BoundRun) {
			fmt.Fprintf(stderr, "bound %s seed %d: %.3f %% (%d LPs, %.1f s)\n", r.Trace, r.Seed, r.Percent, r.LPs, r.Wall.Seconds())
		})
		if err != nil {
			return fmt.Errorf("bounding %s: %w", f, err)
		}
		fmt.Fprintf(stdout, "%-12s %6s %9s %6s %7s %7s  %s\n", "trace", "seed", "bound %", "LPs", "wall s", "relaxed", "box (T per corner)")
		var sum float64
		for _, r := range runs {
			fmt.Fprintf(stdout, "%-12s %6d %9.3f %6d %7.1f %7d  %s\n", r.Trace, r.Seed, r.Percent, r.LPs, r.Wall.Seconds(), r.Relaxed, formatBox(r.Box))
			sum += r.Percent
		}
		fmt.Fprintf(stdout, "%-12s %6s %9.3f  (mean of %d seeds)\n", t.Name, "mean", sum/float64(len(runs)), len(runs))
		all = append(all, runs...)
	}
	if o.out == "" {
		return nil
	}
	return writeBound(o.out, o, corners, all)
}

func formatBox(box []replay.BoundInterval) string {
	parts := make([]string, len(box))
	for i, iv := range box {
		parts[i] = iv.String()
	}
	return strings.Join(parts, " ")
}

type boundJSON struct {
	Nodes    string             `json:"nodes"`
	Pods     []string           `json:"pods"`
	Tune     float64            `json:"tune"`
	MinWidth float64            `json:"min_width"`
	Corners  []replay.Corner    `json:"corners"`
	Runs     []boundRunJSON     `json:"runs"`
	Means    map[string]float64 `json:"mean_bound_pct"`
}

type boundRunJSON struct {
	Trace          string   `json:"trace"`
	Seed           int64    `json:"seed"`
	Pods           int      `json:"pods"`
	BoundPct       float64  `json:"bound_pct"`
	BoundMilli     float64  `json:"bound_milli"`
	CapacityMilli  int64    `json:"capacity_milli"`
	Box            [][2]int `json:"box"`
	LPs            int      `json:"lps"`
	Configurations int      `json:"configurations"`
	Relaxed        int      `json:"relaxed"`
	WallS          float64  `json:"wall_s"`
}

func writeBound(dir string, o *boundOptions, corners []replay.Corner, runs []replay.BoundRun) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	doc := boundJSON{Nodes: o.nodes, Pods: o.pods, Tune: o.tune, MinWidth: o.minWidth, Corners: corners, Means: map[string]float64{}}
	count := map[string]int{}
	var rows [][]string
	rows = append(rows, []string{"trace", "seed", "pods", "bound_pct", "bound_milli", "capacity_milli", "box", "lps", "configurations", "relaxed", "wall_s"})
	for _, r := range runs {
		box := make([][2]int, len(r.Box))
		for i, iv := range r.Box {
			box[i] = [2]int{iv.Lo, iv.Hi}
		}
		doc.Runs = append(doc.Runs, boundRunJSON{Trace: r.Trace, Seed: r.Seed, Pods: r.Pods, BoundPct: r.Percent,
			BoundMilli: r.Used, CapacityMilli: r.Capacity, Box: box, LPs: r.LPs, Configurations: r.Configurations,
			Relaxed: r.Relaxed, WallS: r.Wall.Seconds()})
		doc.Means[r.Trace] += r.Percent
		count[r.Trace]++
		rows = append(rows, []string{r.Trace, strconv.FormatInt(r.Seed, 10), strconv.Itoa(r.Pods),
			strconv.FormatFloat(r.Percent, 'f', 4, 64), strconv.FormatFloat(r.Used, 'f', 1, 64),
			strconv.FormatInt(r.Capacity, 10), formatBox(r.Box), strconv.Itoa(r.LPs),
			strconv.Itoa(r.Configurations), strconv.Itoa(r.Relaxed), strconv.FormatFloat(r.Wall.Seconds(), 'f', 2, 64)})
	}
	for tr, n := range count {
		doc.Means[tr] /= float64(n)
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	if err := w.WriteAll(rows); err != nil {
		return fmt.Errorf("writing bound.csv: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bound.csv"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing bound.csv: %w", err)
	}
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding bound.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bound.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing bound.json: %w", err)
	}
	return nil
}
