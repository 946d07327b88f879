package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		in      string
		want    []int64
		wantErr string
	}{
		{"42-51", []int64{42, 43, 44, 45, 46, 47, 48, 49, 50, 51}, ""},
		{"1, 5,7-9", []int64{1, 5, 7, 8, 9}, ""},
		{"3", []int64{3}, ""},
		{"9-7", nil, `seed range "9-7": the end is before the start`},
		{"x", nil, `seed "x": want an integer or a range like 42-51`},
		{"1-y", nil, `seed range "1-y": want a range like 42-51`},
		{"", nil, "no seed given"},
		{"0-1000000", nil, "more than 100000 seeds"},
	}
	for _, tt := range tests {
		got, err := ParseSeeds(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSeeds(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseSeeds(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestReadAnchors(t *testing.T) {
	a, err := ReadAnchors("a.csv", strings.NewReader(
		"trace,policy,alloc_pct_at_100,alloc_pct_at_130,seeds\ndefault,FGD,95.23,95.39,10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Lookup("default", "fgd"); !ok || got != (Anchor{95.23, 95.39, 10}) {
		t.Errorf("Lookup = %+v, %v", got, ok)
	}
	_, err = ReadAnchors("a.csv", strings.NewReader(
		"trace,policy,alloc_pct_at_100,alloc_pct_at_130\ndefault,FGD,95.23,x\ndefault,Random,1,2\n"))
	if err == nil || err.Error() != `a.csv:2: column alloc_pct_at_130: "x" is not a number` {
		t.Errorf("err = %v", err)
	}
}

func curveWith(at100, at130 float64) Curve {
	var c Curve
	for i := range c {
		c[i] = math.NaN()
	}
	c[100], c[130] = at100, at130
	return c
}

func TestSummarizeAndWrite(t *testing.T) {
	results := []*Result{
		{Trace: "default", Policy: "FGD", Seed: 1, Pods: 10, Placed: 8, Failed: 2, Curve: curveWith(95, 95.5), Wall: time.Second},
		{Trace: "default", Policy: "FGD", Seed: 2, Pods: 12, Placed: 8, Failed: 4, Curve: curveWith(95.5, 96), Wall: 3 * time.Second},
		{Trace: "default", Policy: "Random", Seed: 1, Pods: 10, Placed: 5, Failed: 5, Curve: curveWith(86, math.NaN())},
	}
	anchors := Anchors{{"default", "fgd"}: {At100: 95.23, At130: 95.39}}
	sums := Summarize(results, anchors)
	if len(sums) != 2 {
		t.Fatalf("summaries = %+v", sums)
	}
	fgd := sums[0]
	if fgd.Trace != "default" || fgd.Policy != "FGD" || fgd.Seeds != 2 || fgd.At100 != 95.25 || fgd.At130 != 95.75 ||
		fgd.FailedPods != 3 || fgd.Pods != 11 || fgd.WallSeconds != 2 {
		t.Errorf("fgd summary = %+v", fgd)
	}
	if fgd.Diff130 == nil || math.Abs(*fgd.Diff130-0.36) > 1e-9 || *fgd.Anchor100 != 95.23 {
		t.Errorf("fgd anchor diff = %v", fgd.Diff130)
	}
	if sums[1].Diff130 != nil || !math.IsNaN(sums[1].At130) {
		t.Errorf("random summary = %+v", sums[1])
	}
	if d, ok := MaxAbsDiff130(sums); !ok || math.Abs(d-0.36) > 1e-9 {
		t.Errorf("MaxAbsDiff130 = %v, %v", d, ok)
	}

	SetBounds(sums, map[string]float64{"default": 96.5, "other": 90})
	if sums[0].Bound130 == nil || *sums[0].Bound130 != 96.5 || sums[1].Bound130 == nil || *sums[1].Bound130 != 96.5 {
		t.Errorf("bounds not set on every summary of the trace: %+v", sums)
	}
	var b bytes.Buffer
	if err := WriteSummaryCSV(&b, sums); err != nil {
		t.Fatal(err)
	}
	want := "trace,policy,seeds,alloc_pct_at_100,alloc_pct_at_130,anchor_at_100,anchor_at_130,diff_at_100,diff_at_130,failed_pods_mean,pods_mean,wall_seconds_mean,bound_at_130\n" +
		"default,FGD,2,95.250,95.750,95.23,95.39,0.020,0.360,3.0,11.0,2.000,96.500\n" +
		"default,Random,1,86.000,,,,,,5.0,10.0,0.000,96.500\n"
	if b.String() != want {
		t.Errorf("summary csv:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := WriteRunsCSV(&b, results[:1]); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "trace,policy,seed,pods,placed,failed,0,1,") ||
		!strings.HasSuffix(lines[0], ",129,130") || !strings.HasPrefix(lines[1], "default,FGD,1,10,8,2,,") ||
		!strings.HasSuffix(lines[1], ",95.00,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,95.50") {
		t.Errorf("runs csv:\n%s", b.String())
	}

	b.Reset()
	if err := WriteSummaryJSON(&b, SummaryDoc{Tune: 1.3, Seeds: []int64{1, 2}, Results: sums}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("summary json: %v\n%s", err, b.String())
	}
	if doc.Results[0]["alloc_pct_at_130"] != 95.75 || doc.Results[0]["diff_at_130"] == nil ||
		doc.Results[1]["alloc_pct_at_130"] != nil || doc.Results[1]["seeds"] != 1.0 {
		t.Errorf("summary json results = %v", doc.Results)
	}

	b.Reset()
	if err := WriteTable(&b, sums); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| default | FGD | 95.25 | 95.23 | 0.02 | 95.75 | 95.39 | 0.36 |") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestProgress(t *testing.T) {
	r := &Result{Trace: "default", Policy: "FGD", Seed: 42, Pods: 10, Failed: 1, Curve: curveWith(95, 95.4), Wall: 1500 * time.Microsecond}
	var b bytes.Buffer
	NewProgress(&b, false).Update(3, 10, r)
	if want := "run 3/10 trace=default policy=FGD seed=42 pods=10 failed=1 alloc@100=95.00 alloc@130=95.40 wall=2ms\n"; b.String() != want {
		t.Errorf("lines: %q, want %q", b.String(), want)
	}
	b.Reset()
	p := NewProgress(&b, true)
	p.now = func() time.Time { return p.start.Add(10 * time.Second) }
	p.Update(5, 10, r)
	if want := "\r[===============               ] 5/10  default FGD seed 42  elapsed 10s  eta 10s\x1b[K"; b.String() != want {
		t.Errorf("bar: %q, want %q", b.String(), want)
	}
	p.Update(10, 10, r)
	if !strings.HasSuffix(b.String(), "\x1b[K\n") {
		t.Errorf("the bar must end with a newline when done: %q", b.String())
	}
}

func TestExperimentRun(t *testing.T) {
	c := newCluster(t, "n0,32000,131072,4,T4", "n1,64000,262144,8,G2")
	tr := newTrace(t, c, append(podRows("s", 20, 2000, 4096, 1, 400, ""), podRows("w", 8, 4000, 4096, 1, 1000, "")...)...)
	var calls []int
	e := &Experiment{Cluster: c, Traces: []*Trace{tr}, Policies: []Policy{FGD{}, BestFit{}}, Seeds: []int64{1, 2, 3},
		Tune: DefaultTune, Parallel: 2, Progress: func(done, total int, _ *Result) {
			if total != 6 {
				t.Errorf("total = %d", total)
			}
			calls = append(calls, done)
		}}
	res, err := e.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, r.Policy+"/"+string(rune('0'+r.Seed)))
	}
	if want := []string{"FGD/1", "FGD/2", "FGD/3", "BestFit/1", "BestFit/2", "BestFit/3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("result order = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(calls, []int{1, 2, 3, 4, 5, 6}) {
		t.Errorf("progress calls = %v", calls)
	}
	// Parallel or not, a seed gives the same curve.
	one, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: BestFit{}, Seed: 2, Tune: DefaultTune})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fmtCurve(one.Curve), fmtCurve(res[4].Curve)) {
		t.Error("parallel replay differs from a single replay")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Run(ctx); err == nil {
		t.Error("a cancelled experiment must fail")
	}
	if _, err := (&Experiment{}).Run(context.Background()); err == nil {
		t.Error("an empty experiment must fail")
	}
}

func fmtCurve(c Curve) []string {
	out := make([]string, len(c))
	for i, v := range c {
		out[i] = fmtNum(v, 2)
	}
	return out
}

func TestSimulate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nodes := write("nodes.csv", nodeHeader+"n0,32000,131072,4,T4\nn1,64000,262144,8,G2\nbad,x,1,1,T4\n")
	pods := write("openb_pod_list_tiny.csv", podHeader+strings.Join(podRows("s", 30, 2000, 4096, 1, 400, ""), "\n")+
		"\nw,4000,4096,1,1000,H100\n")
	anchor := write("anchor.csv", "trace,policy,alloc_pct_at_100,alloc_pct_at_130\ntiny,FGD,0,0\n")
	out := filepath.Join(dir, "out")
	cfg := SimulateConfig{NodesFile: nodes, PodFiles: []string{pods}, Policies: []Policy{FGD{}, Random{}},
		Seeds: []int64{1, 2}, Tune: DefaultTune, OutDir: out, AnchorFile: anchor, Progress: ProgressLines, MaxIssues: -1}
	var stdout, stderr bytes.Buffer
	if err := Simulate(context.Background(), cfg, &stdout, &stderr); err != nil {
		t.Fatalf("Simulate: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		nodes + `:4: node bad: column cpu_milli: "x" is not an integer`,
		nodes + ": 1 rows skipped, 0 rows kept with a warning",
		pods + `:32: pod w: gpu_spec "H100": unknown gpu model "H100" (the nodes have G2, T4)`,
		"run 4/4 trace=tiny",
		"4 replays in",
		"input rows skipped: 1; kept with a warning: 2",
		"largest |ours - anchor| at 130%",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if !strings.Contains(stdout.String(), "| tiny | FGD |") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	for _, f := range []string{RunsFile, SummaryCSVFile, SummaryJSONFile} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}

	// --bound: each trace's bound in the summary (at least every policy's
	// allocation) and on both charts.
	bcfg := cfg
	bcfg.Bound, bcfg.OutDir = true, filepath.Join(dir, "bound")
	stderr.Reset()
	if err := Simulate(context.Background(), bcfg, &stdout, &stderr); err != nil {
		t.Fatalf("Simulate with bound: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "upper bound on tiny (any policy, mean of 2 seeds): ") {
		t.Errorf("stderr lacks the bound:\n%s", stderr.String())
	}
	var doc struct {
		Results []Summary `json:"results"`
	}
	data, err := os.ReadFile(filepath.Join(bcfg.OutDir, SummaryJSONFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("summary.json: %v", err)
	}
	for _, r := range doc.Results {
		if r.Bound130 == nil || *r.Bound130 < r.At130-1e-9 || *r.Bound130 > 100 {
			t.Errorf("%s: bound %v against allocation %v at 130 %%", r.Policy, r.Bound130, r.At130)
		}
	}
	for _, f := range []string{"curve_tiny.svg", "curve_tiny_zoom.svg"} {
		svg, err := os.ReadFile(filepath.Join(bcfg.OutDir, f))
		if err != nil || !strings.Contains(string(svg), BoundLabel) {
			t.Errorf("%s: no bound line (%v)", f, err)
		}
	}

	cfg.Tolerance = 0.5
	err = Simulate(context.Background(), cfg, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "differs from the anchor by more than 0.50 percentage points at 130%: tiny/FGD") {
		t.Errorf("tolerance: err = %v", err)
	}

	bad := SimulateConfig{Tune: -1, Tolerance: -1, Progress: "fancy"}
	err = Simulate(context.Background(), bad, &stdout, &stderr)
	for _, want := range []string{"nodes:", "pods:", "policy:", "seeds:", "tune: -1", "out:", "tolerance: -1", `progress: unknown mode "fancy"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error %v lacks %q", err, want)
		}
	}
}
