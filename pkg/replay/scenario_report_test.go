package replay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestScenarioSmallGolden replays the small scenario under every policy
// with two seeds and compares the table with testdata/small.golden
// (go test ./pkg/replay -run TestScenarioSmallGolden -update rewrites it).
func TestScenarioSmallGolden(t *testing.T) {
	scs, err := LookupScenarios("small")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var buf bytes.Buffer
	sums, err := SimulateScenarios(context.Background(), ScenarioConfig{Scenarios: scs, Policies: ScenarioPolicies(), Seeds: []int64{42, 43}, OutDir: out}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "scenario-small.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading %s (go test -update writes it): %v", golden, err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("table differs from %s (go test -update rewrites it):\n%s\nwant:\n%s", golden, buf.Bytes(), want)
	}
	if len(sums) != len(ScenarioPolicies()) {
		t.Errorf("%d summaries, want one per policy (%d)", len(sums), len(ScenarioPolicies()))
	}
	for _, f := range []string{ScenarioRunsFile, ScenarioSummaryCSVFile, ScenarioSummaryJSONFile} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("output %s: %v (size %v)", f, err, fi)
		}
	}
}
