package replay

import (
	"math"
	"testing"
)

func TestRoundHalfEven(t *testing.T) {
	tests := []struct {
		x      float64
		digits int
		want   float64
	}{
		{0.5, 0, 0},
		{1.5, 0, 2},
		{2.5, 0, 2},
		{-0.5, 0, 0},
		{0.125, 2, 0.12}, // exact binary tie: to even
		{0.375, 2, 0.38},
		{2.675, 2, 2.67}, // 2.67499999... in binary
		{1.005, 2, 1.00}, // 1.00499999... in binary
		{95.234999, 2, 95.23},
		{95.235001, 2, 95.24},
		{math.NaN(), 2, math.NaN()},
	}
	for _, tt := range tests {
		got := RoundHalfEven(tt.x, tt.digits)
		if got != tt.want && !(math.IsNaN(got) && math.IsNaN(tt.want)) {
			t.Errorf("RoundHalfEven(%v, %d) = %v, want %v", tt.x, tt.digits, got, tt.want)
		}
	}
}

func TestRoundHalfEvenDiv(t *testing.T) {
	const d = 62120 // 6212 GPUs × 10
	tests := []struct {
		n, want int64
	}{
		{0, 0},
		{31059, 0},
		{31060, 0}, // 0.5 → 0
		{31061, 1},
		{93180, 2},  // 1.5 → 2
		{155300, 2}, // 2.5 → 2
		{217420, 4}, // 3.5 → 4
		{100 * d, 100},
		{130*d + 31060, 130}, // 130.5 → 130
		{131*d + 31060, 132}, // 131.5 → 132
	}
	for _, tt := range tests {
		if got := roundHalfEvenDiv(tt.n, d); got != tt.want {
			t.Errorf("roundHalfEvenDiv(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

func TestPairwiseSum(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 16, 127, 128, 129, 300, 1000} {
		a := make([]float64, n)
		var want float64
		for i := range a {
			a[i] = float64(i%97) + 0.25
			want += a[i]
		}
		if got := pairwiseSum(a); math.Abs(got-want) > 1e-9*math.Max(1, want) {
			t.Errorf("n=%d: pairwiseSum = %v, want %v", n, got, want)
		}
	}
	// numpy's order: 8 accumulators, combined pairwise, then the rest.
	a := []float64{1e16, 1, 1, 1, -1e16, 1, 1, 1, 1}
	want := ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + a[8]
	if got := pairwiseSum(a); got != want {
		t.Errorf("pairwiseSum order: %v, want %v", got, want)
	}
}

func TestDiscretize(t *testing.T) {
	const gpus = 10 // 1 % of capacity is 100 milli; X = round(arrived/100)
	ev := func(arrived, used int64) Event { return Event{Arrived: arrived, Used: used} }
	events := []Event{
		ev(0, 0),      // a=0, 0.00
		ev(0, 0),      // a=0
		ev(50, 50),    // a=0 (0.5 → 0), alloc 0.50 → X=0 mean of 0, 0, 0.5
		ev(150, 150),  // a=2 (1.5 → 2): nothing at X=1
		ev(250, 200),  // a=2 (2.5 → 2)
		ev(251, 201),  // a=3
		ev(700, 333),  // a=7: X=4..5 empty, X=6 takes a in 5..7
		ev(1300, 999), // a=13
	}
	c := Discretize(events, gpus)
	want := map[int]float64{
		0:  RoundHalfEven((0+0+0.5)/3, 2), // 0.17
		1:  RoundHalfEven((0+0+0.5+1.5+2.0)/5, 2),
		2:  1.75,
		3:  2.01,
		4:  2.01, // a in 3..5
		5:  math.NaN(),
		6:  3.33,
		7:  3.33,
		8:  3.33,
		9:  math.NaN(),
		12: 9.99,
		13: 9.99,
		14: 9.99,
		15: math.NaN(),
	}
	for x, w := range want {
		got := c.At(x)
		if got != w && !(math.IsNaN(got) && math.IsNaN(w)) {
			t.Errorf("X=%d: %v, want %v", x, got, w)
		}
	}
	if !math.IsNaN(c.At(-1)) || !math.IsNaN(c.At(MaxX+1)) {
		t.Error("out-of-range X must be NaN")
	}
	if e := Discretize(nil, gpus); !math.IsNaN(e[0]) {
		t.Error("no events must give NaN")
	}
}

func TestAllocRatio(t *testing.T) {
	// The protocol divides by the GPU count, then by 10, then rounds.
	if got := allocRatio(3106000, 6212); got != 50 {
		t.Errorf("allocRatio = %v", got)
	}
	if got := allocRatio(5915000, 6212); got != 95.22 { // 95.2189...
		t.Errorf("allocRatio = %v", got)
	}
}
