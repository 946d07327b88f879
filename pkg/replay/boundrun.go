package replay

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
)

// BoundConfig is everything `gpu-scheduler simulate bound` does, as values.
type BoundConfig struct {
	NodesFile string
	PodFiles  []string
	Seeds     []int64
	Tune      float64
	// OutDir, when set, receives BoundCSVFile and BoundJSONFile.
	OutDir  string
	Options BoundOptions
	// Parallel bounds the seeds bounded at once; 0 means GOMAXPROCS.
	Parallel int
	// MaxIssues bounds the input problems printed per file; negative
	// prints all.
	MaxIssues int
}

// Output files of Bound.
const (
	BoundCSVFile  = "bound.csv"
	BoundJSONFile = "bound.json"
)

// Validate checks the configuration; messages name the setting at fault.
func (c *BoundConfig) Validate() error {
	errs := inputErrors(c.NodesFile, c.PodFiles, c.Seeds, c.Tune)
	if c.Options.MinWidth < 0 || math.IsNaN(c.Options.MinWidth) {
		errs = append(errs, fmt.Sprintf("min-width: %v is not 0 or a positive fraction of the GPU capacity", c.Options.MinWidth))
	}
	if c.Options.MaxLPs < 0 {
		errs = append(errs, fmt.Sprintf("max-lps: %d is not 0 (no limit) or a positive number", c.Options.MaxLPs))
	}
	if c.Parallel < 0 {
		errs = append(errs, fmt.Sprintf("parallel: %d is not 0 (GOMAXPROCS) or a positive number", c.Parallel))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid bound settings: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Bound loads the inputs, runs UpperBound on every trace and seed (BoundSeeds),
// prints one line per seed and the mean per trace to stdout, progress and
// input problems to stderr, and writes bound.csv and bound.json into OutDir
// when it is set.
func Bound(ctx context.Context, cfg BoundConfig, stdout, stderr io.Writer) error {
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
	par := cfg.Parallel
	if par == 0 {
		par = runtime.GOMAXPROCS(0)
	}
	var all []BoundRun
	out := &errWriter{w: stdout}
	for _, f := range cfg.PodFiles {
		t, err := LoadTrace(f, cluster)
		if err != nil {
			return fmt.Errorf("loading pods: %w", err)
		}
		if err := WriteIssues(stderr, f, &t.Issues, cfg.MaxIssues); err != nil {
			return err
		}
		progress := &errWriter{w: stderr}
		runs, err := BoundSeeds(ctx, cluster, t, cfg.Seeds, cfg.Tune, cfg.Options, par, func(r BoundRun) {
			progress.printf("bound %s seed %d: %.3f %% (%d LPs, %.1f s)\n", r.Trace, r.Seed, r.Percent, r.LPs, r.Wall.Seconds())
		})
		if err != nil {
			return fmt.Errorf("bounding %s: %w", f, err)
		}
		out.printf("%-12s %6s %9s %6s %7s %7s  %s\n", "trace", "seed", "bound %", "LPs", "wall s", "relaxed", "box (T per corner)")
		var sum float64
		for _, r := range runs {
			out.printf("%-12s %6d %9.3f %6d %7.1f %7d  %s\n", r.Trace, r.Seed, r.Percent, r.LPs, r.Wall.Seconds(), r.Relaxed, formatBox(r.Box))
			sum += r.Percent
		}
		out.printf("%-12s %6s %9.3f  (mean of %d seeds)\n", t.Name, "mean", sum/float64(len(runs)), len(runs))
		all = append(all, runs...)
	}
	if out.err != nil {
		return fmt.Errorf("writing report: %w", out.err)
	}
	if cfg.OutDir == "" {
		return nil
	}
	return writeBound(cfg, all)
}

// errWriter prints until the first error and keeps it.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func formatBox(box []BoundInterval) string {
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
	Corners  []Corner           `json:"corners"`
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

func writeBound(cfg BoundConfig, runs []BoundRun) error {
	corners := cfg.Options.Corners
	if len(corners) == 0 {
		corners = DefaultBoundCorners
	}
	doc := boundJSON{Nodes: cfg.NodesFile, Pods: cfg.PodFiles, Tune: cfg.Tune, MinWidth: cfg.Options.MinWidth, Corners: corners, Means: map[string]float64{}}
	count := map[string]int{}
	rows := [][]string{{"trace", "seed", "pods", "bound_pct", "bound_milli", "capacity_milli", "box", "lps", "configurations", "relaxed", "wall_s"}}
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
	return writeFiles(cfg.OutDir, map[string]func(io.Writer) error{
		BoundCSVFile:  func(w io.Writer) error { return writeCSV(w, rows) },
		BoundJSONFile: func(w io.Writer) error { return writeJSON(w, doc) },
	})
}
