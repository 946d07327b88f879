package replay

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Anchor is a published reference value for one trace and policy.
type Anchor struct {
	At100, At130 float64
	Seeds        int
}

// Anchors maps (trace, lower-case policy name) to the reference values.
type Anchors map[[2]string]Anchor

// Lookup returns the anchor of a trace and policy, matching the policy name
// case-insensitively.
func (a Anchors) Lookup(trace, policy string) (Anchor, bool) {
	v, ok := a[[2]string{trace, strings.ToLower(policy)}]
	return v, ok
}

// LoadAnchors reads an anchor CSV with columns trace, policy,
// alloc_pct_at_100, alloc_pct_at_130 and, optionally, seeds.
func LoadAnchors(path string) (Anchors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening anchor csv: %w", err)
	}
	defer func() { _ = f.Close() }()
	return ReadAnchors(path, f)
}

// ReadAnchors is LoadAnchors over a reader; name is used in messages. Any bad
// row is an error: a comparison against a half-read anchor would mislead.
func ReadAnchors(name string, rd io.Reader) (Anchors, error) {
	t, err := openCSV(name, rd, []string{"trace", "policy", "alloc_pct_at_100", "alloc_pct_at_130"})
	if err != nil {
		return nil, err
	}
	_, hasSeeds := t.header["seeds"]
	out := Anchors{}
	var is Issues
	err = t.rows(&is, func(line int, rec []string) {
		var a Anchor
		for _, fld := range []struct {
			col string
			dst *float64
		}{{"alloc_pct_at_100", &a.At100}, {"alloc_pct_at_130", &a.At130}} {
			s := t.get(rec, fld.col)
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				is.skip(name, line, "column %s: %q is not a number", fld.col, s)
				return
			}
			*fld.dst = v
		}
		if hasSeeds {
			if s := t.get(rec, "seeds"); s != "" {
				v, err := strconv.Atoi(s)
				if err != nil {
					is.skip(name, line, "column seeds: %q is not an integer", s)
					return
				}
				a.Seeds = v
			}
		}
		out[[2]string{t.get(rec, "trace"), strings.ToLower(t.get(rec, "policy"))}] = a
	})
	if err != nil {
		return nil, err
	}
	if len(is.List) > 0 {
		msgs := make([]string, len(is.List))
		for i, x := range is.List {
			msgs[i] = x.String()
		}
		return nil, errors.New(strings.Join(msgs, "\n"))
	}
	return out, nil
}

// Summary is the mean outcome of one trace and policy over its seeds.
type Summary struct {
	Trace  string `json:"trace"`
	Policy string `json:"policy"`
	Seeds  int    `json:"seeds"`
	// At100 and At130 are the mean allocation % at 100 % and 130 % arrived
	// demand.
	At100 float64 `json:"alloc_pct_at_100"`
	At130 float64 `json:"alloc_pct_at_130"`
	// Anchor values and our value minus the anchor, when an anchor is known.
	Anchor100 *float64 `json:"anchor_at_100,omitempty"`
	Anchor130 *float64 `json:"anchor_at_130,omitempty"`
	Diff100   *float64 `json:"diff_at_100,omitempty"`
	Diff130   *float64 `json:"diff_at_130,omitempty"`
	// FailedPods is the mean number of pods that found no node; Pods the mean
	// number of arrivals.
	FailedPods float64 `json:"failed_pods_mean"`
	Pods       float64 `json:"pods_mean"`
	// WallSeconds is the mean wall time of one replay.
	WallSeconds float64 `json:"wall_seconds_mean"`
	// Bound130, when computed (SimulateConfig.Bound), is the trace's mean
	// over seeds of UpperBound: no policy's final allocation, hence none at
	// 130 %, exceeds it on those arrival orders.
	Bound130 *float64 `json:"bound_at_130,omitempty"`
}

// Summarize groups results by trace and policy (keeping their order) and
// averages over seeds; anchors may be nil.
func Summarize(results []*Result, anchors Anchors) []Summary {
	type acc struct {
		s                     Summary
		sum100, sum130        float64
		n100, n130            int
		failed, pods, wallSec float64
	}
	groups := grouped(results, func(r *Result) [2]string { return [2]string{r.Trace, r.Policy} },
		func(r *Result) *acc { return &acc{s: Summary{Trace: r.Trace, Policy: r.Policy}} })
	for i, r := range results {
		a := groups.of[i]
		a.s.Seeds++
		if v := r.Curve.At(100); !math.IsNaN(v) {
			a.sum100 += v
			a.n100++
		}
		if v := r.Curve.At(130); !math.IsNaN(v) {
			a.sum130 += v
			a.n130++
		}
		a.failed += float64(r.Failed)
		a.pods += float64(r.Pods)
		a.wallSec += r.Wall.Seconds()
	}
	out := make([]Summary, 0, len(groups.order))
	for _, a := range groups.order {
		s := a.s
		s.At100, s.At130 = meanOrNaN(a.sum100, a.n100), meanOrNaN(a.sum130, a.n130)
		n := float64(s.Seeds)
		s.FailedPods, s.Pods, s.WallSeconds = a.failed/n, a.pods/n, a.wallSec/n
		if an, ok := anchors.Lookup(s.Trace, s.Policy); ok {
			s.Anchor100, s.Anchor130 = ptr(an.At100), ptr(an.At130)
			if !math.IsNaN(s.At100) {
				s.Diff100 = ptr(s.At100 - an.At100)
			}
			if !math.IsNaN(s.At130) {
				s.Diff130 = ptr(s.At130 - an.At130)
			}
		}
		out = append(out, s)
	}
	return out
}

// groups are the accumulators of results grouped by a key (experiment and
// policy): order holds them in first-seen order, of that of each result.
type groups[A any] struct {
	order []*A
	of    []*A
}

// grouped makes one accumulator (by start, from its first result) per key
// of the results.
func grouped[R any, A any](results []R, key func(R) [2]string, start func(R) *A) groups[A] {
	g := groups[A]{of: make([]*A, len(results))}
	byKey := map[[2]string]*A{}
	for i, r := range results {
		k := key(r)
		a, ok := byKey[k]
		if !ok {
			a = start(r)
			byKey[k] = a
			g.order = append(g.order, a)
		}
		g.of[i] = a
	}
	return g
}

func meanOrNaN(sum float64, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

func ptr(v float64) *float64 { return &v }

func fmtNum(v float64, digits int) string {
	if math.IsNaN(v) {
		return ""
	}
	if v = RoundHalfEven(v, digits); v == 0 {
		v = 0 // no "-0.00"
	}
	return strconv.FormatFloat(v, 'f', digits, 64)
}

func fmtPtr(v *float64, digits int) string {
	if v == nil {
		return ""
	}
	return fmtNum(*v, digits)
}

// WriteRunsCSV writes one row per replay: trace, policy, seed, pod counts and
// the allocation % at X = 0..130.
func WriteRunsCSV(w io.Writer, results []*Result) error {
	cw := csv.NewWriter(w)
	head := []string{"trace", "policy", "seed", "pods", "placed", "failed"}
	for x := 0; x <= MaxX; x++ {
		head = append(head, strconv.Itoa(x))
	}
	if err := cw.Write(head); err != nil {
		return fmt.Errorf("writing runs csv: %w", err)
	}
	for _, r := range results {
		row := []string{r.Trace, r.Policy, strconv.FormatInt(r.Seed, 10),
			strconv.Itoa(r.Pods), strconv.Itoa(r.Placed), strconv.Itoa(r.Failed)}
		for x := 0; x <= MaxX; x++ {
			row = append(row, fmtNum(r.Curve[x], 2))
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("writing runs csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing runs csv: %w", err)
	}
	return nil
}

// SetBounds sets Bound130 on every summary whose trace has a bound.
func SetBounds(sums []Summary, bounds map[string]float64) {
	for i := range sums {
		if b, ok := bounds[sums[i].Trace]; ok {
			sums[i].Bound130 = ptr(b)
		}
	}
}

// WriteSummaryCSV writes one row per trace and policy.
func WriteSummaryCSV(w io.Writer, sums []Summary) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"trace", "policy", "seeds", "alloc_pct_at_100", "alloc_pct_at_130",
		"anchor_at_100", "anchor_at_130", "diff_at_100", "diff_at_130",
		"failed_pods_mean", "pods_mean", "wall_seconds_mean", "bound_at_130"}); err != nil {
		return fmt.Errorf("writing summary csv: %w", err)
	}
	for _, s := range sums {
		if err := cw.Write([]string{s.Trace, s.Policy, strconv.Itoa(s.Seeds),
			fmtNum(s.At100, 3), fmtNum(s.At130, 3),
			fmtPtr(s.Anchor100, 2), fmtPtr(s.Anchor130, 2), fmtPtr(s.Diff100, 3), fmtPtr(s.Diff130, 3),
			fmtNum(s.FailedPods, 1), fmtNum(s.Pods, 1), fmtNum(s.WallSeconds, 3), fmtPtr(s.Bound130, 3)}); err != nil {
			return fmt.Errorf("writing summary csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing summary csv: %w", err)
	}
	return nil
}

// SummaryDoc is the JSON summary: the settings and one entry per trace and
// policy.
type SummaryDoc struct {
	Nodes   string    `json:"nodes"`
	Pods    []string  `json:"pods"`
	Tune    float64   `json:"tune"`
	Seeds   []int64   `json:"seeds"`
	Anchor  string    `json:"anchor,omitempty"`
	Results []Summary `json:"results"`
	// MaxAbsDiff130 is the largest |ours − anchor| at 130 %, when anchors
	// were given.
	MaxAbsDiff130 *float64 `json:"max_abs_diff_at_130,omitempty"`
}

// WriteSummaryJSON writes doc as indented JSON; NaN values become null.
func WriteSummaryJSON(w io.Writer, doc SummaryDoc) error {
	type jsonSummary struct {
		Summary
		At100 *float64 `json:"alloc_pct_at_100"`
		At130 *float64 `json:"alloc_pct_at_130"`
	}
	type jsonDoc struct {
		SummaryDoc
		Results []jsonSummary `json:"results"`
	}
	out := jsonDoc{SummaryDoc: doc}
	for _, s := range doc.Results {
		js := jsonSummary{Summary: s}
		if !math.IsNaN(s.At100) {
			js.At100 = ptr(s.At100)
		}
		if !math.IsNaN(s.At130) {
			js.At130 = ptr(s.At130)
		}
		out.Results = append(out.Results, js)
	}
	return writeJSON(w, out)
}

// MaxAbsDiff130 is the largest |ours − anchor| at 130 % over the summaries
// that have an anchor; ok is false when none has.
func MaxAbsDiff130(sums []Summary) (d float64, ok bool) {
	for _, s := range sums {
		if s.Diff130 != nil {
			d, ok = math.Max(d, math.Abs(*s.Diff130)), true
		}
	}
	return d, ok
}

// Output file names inside the output directory.
const (
	RunsFile        = "runs.csv"
	SummaryCSVFile  = "summary.csv"
	SummaryJSONFile = "summary.json"
)

// WriteOutputs writes runs.csv, summary.csv, summary.json and two charts per
// trace (ChartFile, ZoomChartFile) into dir, creating it if needed. The
// charts draw each trace's Bound130 when the summaries carry one.
func WriteOutputs(dir string, results []*Result, doc SummaryDoc) error {
	if err := writeFiles(dir, map[string]func(io.Writer) error{
		RunsFile:        func(w io.Writer) error { return WriteRunsCSV(w, results) },
		SummaryCSVFile:  func(w io.Writer) error { return WriteSummaryCSV(w, doc.Results) },
		SummaryJSONFile: func(w io.Writer) error { return WriteSummaryJSON(w, doc) },
	}); err != nil {
		return err
	}
	bounds := map[string]float64{}
	for _, s := range doc.Results {
		if s.Bound130 != nil {
			bounds[s.Trace] = *s.Bound130
		}
	}
	return WriteCharts(dir, results, bounds)
}

// writeFiles creates dir if needed and writes each named file with its
// writer, in name order: the report writers of every experiment (trace
// replay, bound, scenarios) go through it.
func writeFiles(dir string, files map[string]func(io.Writer) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
		if err := files[name](f); err != nil {
			_ = f.Close()
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("closing %s: %w", path, err)
		}
	}
	return nil
}

// writeCSV writes rows (the header first) as CSV.
func writeCSV(w io.Writer, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("writing csv: %w", err)
	}
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing json: %w", err)
	}
	return nil
}

// WriteTable writes the summaries as an aligned text table (for terminals
// and docs/benchmarks.md): ours, anchor and difference at 100 and 130.
func WriteTable(w io.Writer, sums []Summary) error {
	var b strings.Builder
	b.WriteString("| trace | policy | ours @100 | anchor @100 | diff @100 | ours @130 | anchor @130 | diff @130 |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", s.Trace, s.Policy,
			fmtNum(s.At100, 2), fmtPtr(s.Anchor100, 2), fmtPtr(s.Diff100, 2),
			fmtNum(s.At130, 2), fmtPtr(s.Anchor130, 2), fmtPtr(s.Diff130, 2))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing summary table: %w", err)
	}
	return nil
}
