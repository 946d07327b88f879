package scoring

import (
	"math"
	"testing"
)

func TestModelPressure(t *testing.T) {
	shapes := []Shape{
		{CPU: 4000, K: 1, G: 500, P: 0.5},                                      // any model: no pressure
		{CPU: 4000, K: 1, G: 800, Allowed: []bool{true, false, false}, P: 0.2}, // model 0 only
		{CPU: 8000, K: 2, G: 1000, Allowed: []bool{false, true, true}, P: 0.1}, // models 1 and 2
		{CPU: 2000, K: 0, G: 0, Allowed: []bool{true, true, true}, P: 0.2},     // CPU-only: none
	}
	got := ModelPressure(shapes, 3)
	want := []float64{0.2 * 0.8, 0.1 * 2 / 2, 0.1 * 2 / 2}
	for m := range want {
		if math.Abs(got[m]-want[m]) > 1e-12 {
			t.Errorf("model %d: pressure %v, want %v", m, got[m], want[m])
		}
	}
}

func TestScarcity(t *testing.T) {
	tests := []struct {
		name                       string
		pressure, modelFree, total float64
		want                       float64
	}{
		{"no pressure", 0, 100, 1000, 0},
		{"model full", 0.2, 0, 1000, 0},
		{"a tenth of the free capacity", 0.2, 100, 1000, 2},
		{"half of it", 0.2, 500, 1000, 0.4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Scarcity(tt.pressure, tt.modelFree, tt.total); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Scarcity(%v, %v, %v) = %v, want %v", tt.pressure, tt.modelFree, tt.total, got, tt.want)
			}
		})
	}
}
