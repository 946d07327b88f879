package replay

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Chart file names inside the output directory; %s is the trace name.
// ChartFile draws 0..130 % arrived demand, ZoomChartFile ZoomFrom..130 %
// with the allocation axis fitted to the curves there.
const (
	ChartFile     = "curve_%s.svg"
	ZoomChartFile = "curve_%s_zoom.svg"
	// ZoomFrom is the first arrived-demand percentage of the zoomed chart.
	ZoomFrom = 80
)

// BoundLabel is the legend of the upper-bound line on the charts.
const BoundLabel = "upper bound, any policy"

// WriteCharts draws, for every trace in results, the allocation ratio
// against arrived GPU demand of each policy, mean over seeds, as two SVGs in
// dir: 0..130 % (ChartFile) and ZoomFrom..130 % (ZoomChartFile). bounds,
// which may be nil, gives traces an upper bound on any policy's allocation
// (UpperBound, mean over seeds), drawn as a dashed line.
func WriteCharts(dir string, results []*Result, bounds map[string]float64) error {
	type key struct{ trace, policy string }
	sum := map[key]*[MaxX + 1]float64{}
	cnt := map[key]*[MaxX + 1]int{}
	var traces []string
	policies := map[string][]string{}
	for _, r := range results {
		k := key{r.Trace, r.Policy}
		if sum[k] == nil {
			sum[k], cnt[k] = new([MaxX + 1]float64), new([MaxX + 1]int)
			if len(policies[r.Trace]) == 0 {
				traces = append(traces, r.Trace)
			}
			policies[r.Trace] = append(policies[r.Trace], r.Policy)
		}
		for x := range r.Curve {
			if v := r.Curve[x]; !math.IsNaN(v) {
				sum[k][x] += v
				cnt[k][x]++
			}
		}
	}
	for _, tr := range traces {
		curves := map[string]plotter.XYs{}
		for _, pol := range policies[tr] {
			k := key{tr, pol}
			for x := range sum[k] {
				if c := cnt[k][x]; c > 0 {
					curves[pol] = append(curves[pol], plotter.XY{X: float64(x), Y: sum[k][x] / float64(c)})
				}
			}
		}
		bound, hasBound := bounds[tr]
		name := strings.ReplaceAll(tr, string(filepath.Separator), "_")
		for _, zoom := range []bool{false, true} {
			from, file, title := 0.0, ChartFile, "Allocation ratio, "+tr
			if zoom {
				from, file, title = ZoomFrom, ZoomChartFile, fmt.Sprintf("Allocation ratio, %s, from %d %% arrived demand", tr, ZoomFrom)
			}
			p := plot.New()
			p.Title.Text = title
			p.X.Label.Text = "arrived GPU demand (% of capacity)"
			p.Y.Label.Text = "allocated GPU (% of capacity)"
			// The curves rise from the bottom left and level off: the legend
			// goes to the free top left corner of the full chart and below the
			// curves of the zoomed one.
			p.Legend.Top, p.Legend.Left = !zoom, true
			p.Legend.TextStyle.Font.Size = vg.Points(9)
			p.Legend.XOffs = vg.Points(6)
			var lines []any
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, pol := range policies[tr] {
				var xy plotter.XYs
				for _, pt := range curves[pol] {
					if pt.X >= from {
						xy = append(xy, pt)
						lo, hi = math.Min(lo, pt.Y), math.Max(hi, pt.Y)
					}
				}
				lines = append(lines, pol, xy)
			}
			if err := plotutil.AddLines(p, lines...); err != nil {
				return fmt.Errorf("drawing chart of %s: %w", tr, err)
			}
			if hasBound {
				l, err := plotter.NewLine(plotter.XYs{{X: from, Y: bound}, {X: MaxX, Y: bound}})
				if err != nil {
					return fmt.Errorf("drawing the bound on the chart of %s: %w", tr, err)
				}
				l.Color = color.Gray{Y: 80}
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				p.Add(l)
				p.Legend.Add(fmt.Sprintf("%s (%.2f %%)", BoundLabel, bound), l)
				hi = math.Max(hi, bound)
			}
			if zoom && lo <= hi {
				// Room for the legend below the lowest curve.
				p.Y.Min, p.Y.Max = lo-math.Max(1, (hi-lo)*0.6), hi+math.Max(0.3, (hi-lo)*0.03)
			}
			path := filepath.Join(dir, fmt.Sprintf(file, name))
			if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
				return fmt.Errorf("writing chart %s: %w", path, err)
			}
		}
	}
	return nil
}
