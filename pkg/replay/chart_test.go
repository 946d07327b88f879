package replay

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
		{Trace: "other", Policy: "FGD", Seed: 42, Curve: a},
	}
	dir := t.TempDir()
	if err := WriteCharts(dir, results, map[string]float64{"default": 93.25}); err != nil {
		t.Fatalf("WriteCharts: %v", err)
	}
	tests := []struct {
		file    string
		want    []string
		notWant []string
	}{
		{"curve_default.svg", []string{"<svg", "FGD", "Tessera", BoundLabel + " (93.25 %)"}, nil},
		{"curve_default_zoom.svg", []string{"<svg", "FGD", "Tessera", BoundLabel, "from 80 % arrived demand"}, nil},
		{"curve_other.svg", []string{"<svg", "FGD"}, []string{BoundLabel, "Tessera"}},
		{"curve_other_zoom.svg", []string{"<svg", "FGD"}, []string{BoundLabel}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatalf("reading chart: %v", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(string(data), want) {
					t.Errorf("chart lacks %q", want)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(string(data), nw) {
					t.Errorf("chart has %q", nw)
				}
			}
		})
	}
}
