package replay

import (
	"math"
	"strconv"
)

// MaxX is the largest arrived-demand percentage the curve is sampled at.
const MaxX = 130

// Curve is the allocation ratio (allocated GPU capacity in percent of the
// cluster's) at each percentage X = 0..MaxX of arrived demand; NaN where no
// sample exists.
type Curve [MaxX + 1]float64

// At returns the value at X, NaN when X is out of range or empty.
func (c *Curve) At(x int) float64 {
	if x < 0 || x > MaxX {
		return math.NaN()
	}
	return c[x]
}

// Discretize turns per-event samples into the allocation curve as the
// protocol's analysis does: each event's arrived demand is rounded (half to
// even) to a whole percent a of capacity and its allocation ratio to two
// decimals; the value at X is the mean of the ratios of the events with
// a = X (or, when there are none, X−1 <= a <= X+1), rounded to two decimals.
func Discretize(events []Event, totalGPUs int) Curve {
	var c Curve
	for i := range c {
		c[i] = math.NaN()
	}
	if totalGPUs <= 0 || len(events) == 0 {
		return c
	}
	byX := make([][]float64, MaxX+2)
	for _, e := range events {
		a := roundHalfEvenDiv(e.Arrived, int64(totalGPUs)*10)
		if a < 0 || a > MaxX+1 {
			continue
		}
		byX[a] = append(byX[a], allocRatio(e.Used, totalGPUs))
	}
	var near []float64
	for x := 0; x <= MaxX; x++ {
		vals := byX[x]
		if len(vals) == 0 {
			near = near[:0]
			for a := max(x-1, 0); a <= x+1; a++ {
				near = append(near, byX[a]...)
			}
			vals = near
		}
		if len(vals) == 0 {
			continue
		}
		c[x] = RoundHalfEven(pairwiseSum(vals)/float64(len(vals)), 2)
	}
	return c
}

// allocRatio is round(used/total/10, 2), with the protocol's two divisions.
func allocRatio(used int64, totalGPUs int) float64 {
	return RoundHalfEven(float64(used)/float64(totalGPUs)/10, 2)
}

// roundHalfEvenDiv is round(n/d) for d > 0, ties to even, in exact integer
// arithmetic (what Python's round gives for the float quotient, whose
// rounding error is far below the distance to a tie).
func roundHalfEvenDiv(n, d int64) int64 {
	q, r := n/d, n%d
	if r < 0 {
		q, r = q-1, r+d
	}
	switch {
	case 2*r > d:
		q++
	case 2*r == d && q%2 != 0:
		q++
	}
	return q
}

// RoundHalfEven rounds x to the given number of decimals like Python's
// round(x, digits): to the nearest decimal of the exact binary value, ties
// (which only exact binary values can be) to even.
func RoundHalfEven(x float64, digits int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	// strconv formats the exact binary value, rounding half to even.
	v, err := strconv.ParseFloat(strconv.FormatFloat(x, 'f', digits, 64), 64)
	if err != nil {
		return x
	}
	return v
}

// pairwiseSum adds like numpy's float64 sum (which pandas' mean uses): blocks
// of up to 128 values with eight accumulators, recursive halves above that.
func pairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		var s float64
		for _, v := range a {
			s += v
		}
		return s
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for j := range r {
				r[j] += a[i+j]
			}
		}
		s := (r[0] + r[1] + (r[2] + r[3])) + (r[4] + r[5] + (r[6] + r[7]))
		for ; i < n; i++ {
			s += a[i]
		}
		return s
	default:
		n2 := n / 2
		n2 -= n2 % 8
		return pairwiseSum(a[:n2]) + pairwiseSum(a[n2:])
	}
}
