package replay

// This file is the small linear-programming solver behind UpperBound: a
// dense two-phase primal simplex (solveLP) and the two checks that make its
// answers safe to publish (dualBound, farkas).
//
// gonum's LP (gonum.org/v1/gonum/optimize/convex/lp.Simplex; gonum is in
// the module graph through the charts' gonum/plot) does not serve: it returns the primal optimum only, with
// no row duals, so the bound could only be its primal value, which rounding
// can leave below the true optimum (a bound that is too low); and for an
// infeasible LP it returns an error with no infeasibility certificate, so
// an empty box could not be told from a numerical failure. The bound needs
// both: the duals, made feasible (dualBound), give a value no rounding can
// push below the optimum, and a checked Farkas vector (farkas) is the only
// ground on which a box is declared empty.

import (
	"fmt"
	"math"
)

// dualBound returns an upper bound on max cᵀx over {Ax ≤ b, x ≥ 0, Σx ≤ sumX}
// from any y: with y⁺ = max(y, 0) and ε = max(0, max_j c_j − y⁺ᵀa_j), every
// such x has cᵀx ≤ y⁺ᵀAx + ε·Σx ≤ y⁺ᵀb + ε·sumX.
func dualBound(a []float64, m, n int, b, c, y []float64, sumX float64) (float64, error) {
	yp := make([]float64, m)
	var v float64
	for i := range yp {
		yp[i] = math.Max(y[i], 0)
		v += yp[i] * b[i]
	}
	red := append([]float64(nil), c...)
	for i := 0; i < m; i++ {
		if yp[i] == 0 {
			continue
		}
		for j, x := range a[i*n : (i+1)*n] {
			red[j] -= yp[i] * x
		}
	}
	var eps float64
	for _, r := range red {
		eps = math.Max(eps, r)
	}
	if math.IsNaN(v) || math.IsNaN(eps) {
		return 0, fmt.Errorf("dual bound is not a number")
	}
	return v + eps*sumX, nil
}

// farkas reports whether z proves {Ax ≤ b, x ≥ 0, Σx ≤ sumX} empty: with
// z⁺ = max(z, 0) and δ = max(0, −min_j z⁺ᵀa_j), a feasible x would have
// z⁺ᵀb ≥ z⁺ᵀAx ≥ −δ·sumX.
func farkas(a []float64, m, n int, b, z []float64, sumX float64) bool {
	zp := make([]float64, m)
	var zb float64
	scale := 0.0
	for i := range zp {
		zp[i] = math.Max(z[i], 0)
		zb += zp[i] * b[i]
		scale += zp[i] * math.Abs(b[i])
	}
	col := make([]float64, n)
	for i := 0; i < m; i++ {
		if zp[i] == 0 {
			continue
		}
		for j, x := range a[i*n : (i+1)*n] {
			col[j] += zp[i] * x
		}
	}
	var delta float64
	for _, v := range col {
		delta = math.Max(delta, -v)
	}
	return zb < -delta*sumX-1e-9*scale
}

type lpStatus int

const (
	lpOptimal lpStatus = iota
	lpInfeasible
	lpUnbounded
)

func (s lpStatus) String() string {
	switch s {
	case lpOptimal:
		return "optimal"
	case lpInfeasible:
		return "infeasible"
	case lpUnbounded:
		return "unbounded"
	}
	return fmt.Sprintf("lpStatus(%d)", int(s))
}

// lpSolution is the outcome of solveLP.
type lpSolution struct {
	status lpStatus
	value  float64 // cᵀx at the optimum
	x      []float64
	// dual holds, at an optimum, the row duals y (yᵀb = value); for an
	// infeasible LP, a Farkas vector z ≥ 0 with zᵀA ≥ 0 and zᵀb < 0 (both up
	// to rounding: check them, as dualBound and farkas do).
	dual []float64
}

const (
	lpPivotTol = 1e-9 // smallest column entry a ratio test pivots on
	lpCostTol  = 1e-9 // smallest reduced cost that improves the objective
	lpFeasTol  = 1e-7 // phase-one infeasibility that counts as infeasible
	// lpDegenerate is the number of pivots in a row without progress after
	// which entering columns follow Bland's rule (no cycling).
	lpDegenerate = 50
)

// solveLP maximises cᵀx subject to Ax ≤ b and x ≥ 0, with A dense (m rows of
// n, row-major), by the two-phase primal simplex on a full tableau: a slack
// per row, an artificial per row with b < 0, Dantzig's rule for the entering
// column and Bland's after a run of degenerate pivots.
func solveLP(a []float64, m, n int, b, c []float64) (lpSolution, error) {
	if len(a) != m*n || len(b) != m || len(c) != n {
		return lpSolution{}, fmt.Errorf("lp size mismatch: %d coefficients, %d rows of %d, %d costs", len(a), len(b), n, len(c))
	}
	k := 0
	for _, v := range b {
		if v < 0 {
			k++
		}
	}
	tb := &tableau{m: m, w: n + m + k + 1, basis: make([]int, m)}
	tb.t = make([]float64, m*tb.w)
	tb.obj = make([]float64, tb.w)
	art := n + m
	next := art
	for i := 0; i < m; i++ {
		r := tb.row(i)
		s := 1.0
		if b[i] < 0 {
			s = -1
		}
		for j := 0; j < n; j++ {
			r[j] = s * a[i*n+j]
		}
		r[n+i] = s
		r[tb.w-1] = s * b[i]
		if b[i] < 0 {
			r[next] = 1
			tb.basis[i] = next
			next++
		} else {
			tb.basis[i] = n + i
		}
	}
	dual := func() []float64 {
		y := make([]float64, m)
		for i := range y {
			y[i] = -tb.obj[n+i]
		}
		return y
	}
	if k > 0 {
		cost := make([]float64, tb.w-1)
		for j := art; j < art+k; j++ {
			cost[j] = -1
		}
		tb.setObjective(cost)
		st, err := tb.iterate(art + k)
		if err != nil {
			return lpSolution{}, fmt.Errorf("phase one: %w", err)
		}
		if st != lpOptimal {
			return lpSolution{}, fmt.Errorf("phase one: %v", st)
		}
		if -tb.obj[tb.w-1] < -lpFeasTol {
			return lpSolution{status: lpInfeasible, dual: dual()}, nil
		}
		// Pivot artificials left in the basis (at zero) out on any other
		// column; a row with none is redundant and its artificial stays at 0.
		for i, bv := range tb.basis {
			if bv < art {
				continue
			}
			r := tb.row(i)
			for j := 0; j < art; j++ {
				if math.Abs(r[j]) > lpPivotTol {
					r[tb.w-1] = 0
					tb.pivot(i, j)
					break
				}
			}
		}
	}
	cost := make([]float64, tb.w-1)
	copy(cost, c)
	tb.setObjective(cost)
	st, err := tb.iterate(art)
	if err != nil {
		return lpSolution{}, err
	}
	if st != lpOptimal {
		return lpSolution{status: st}, nil
	}
	x := make([]float64, n)
	for i, bv := range tb.basis {
		if bv < n {
			x[bv] = tb.row(i)[tb.w-1]
		}
	}
	return lpSolution{status: lpOptimal, value: -tb.obj[tb.w-1], x: x, dual: dual()}, nil
}

// tableau is a simplex tableau: m constraint rows of w entries (the last is
// the right-hand side) and the objective row of reduced costs, whose last
// entry is minus the objective.
type tableau struct {
	m, w  int
	t     []float64
	obj   []float64
	basis []int
}

func (tb *tableau) row(i int) []float64 { return tb.t[i*tb.w : (i+1)*tb.w] }

// setObjective prices cost (one per column) against the current basis.
func (tb *tableau) setObjective(cost []float64) {
	copy(tb.obj, cost)
	tb.obj[tb.w-1] = 0
	for i, bv := range tb.basis {
		if cb := cost[bv]; cb != 0 {
			for j, v := range tb.row(i) {
				tb.obj[j] -= cb * v
			}
		}
	}
}

func (tb *tableau) pivot(r, e int) {
	pr := tb.row(r)
	inv := 1 / pr[e]
	for j := range pr {
		pr[j] *= inv
	}
	pr[e] = 1
	elim := func(row []float64) {
		f := row[e]
		if f == 0 {
			return
		}
		for j, v := range pr {
			if v != 0 {
				row[j] -= f * v
			}
		}
		row[e] = 0
	}
	for i := 0; i < tb.m; i++ {
		if i != r {
			elim(tb.row(i))
		}
	}
	elim(tb.obj)
	tb.basis[r] = e
}

// iterate pivots until no column below limit has a positive reduced cost.
func (tb *tableau) iterate(limit int) (lpStatus, error) {
	rhs := tb.w - 1
	degenerate := 0
	maxIter := 50 * (tb.m + limit)
	for it := 0; it < maxIter; it++ {
		e := -1
		if degenerate < lpDegenerate {
			best := lpCostTol
			for j := 0; j < limit; j++ {
				if tb.obj[j] > best {
					e, best = j, tb.obj[j]
				}
			}
		} else {
			for j := 0; j < limit; j++ {
				if tb.obj[j] > lpCostTol {
					e = j
					break
				}
			}
		}
		if e < 0 {
			return lpOptimal, nil
		}
		r := -1
		var ratio float64
		for i := 0; i < tb.m; i++ {
			row := tb.row(i)
			if row[e] <= lpPivotTol {
				continue
			}
			q := math.Max(row[rhs], 0) / row[e]
			if r < 0 || q < ratio || (q == ratio && tb.basis[i] < tb.basis[r]) {
				r, ratio = i, q
			}
		}
		if r < 0 {
			return lpUnbounded, nil
		}
		if ratio*tb.obj[e] <= 1e-12 {
			degenerate++
		} else {
			degenerate = 0
		}
		tb.pivot(r, e)
	}
	return 0, fmt.Errorf("no optimum after %d pivots", maxIter)
}
