package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteCharts(t *testing.T) {
	var a, b Curve
	for x := range a {
		a[x], b[x] = float64(x)*0.7, float64(x)*0.6
	}
	results := []*Result{
		{Trace: "default", Policy: "FGD", Seed: 42, Curve: a},
		{Trace: "default", Policy: "Tessera", Seed: 42, Curve: b},
	}
	dir := t.TempDir()
	if err := WriteCharts(dir, results); err != nil {
		t.Fatalf("WriteCharts: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "curve_default.svg"))
	if err != nil {
		t.Fatalf("reading chart: %v", err)
	}
	for _, want := range []string{"<svg", "FGD", "Tessera"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}
