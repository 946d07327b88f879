package sim

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// ChartFile is the name of the allocation-curve chart of one trace inside
// the output directory; %s is the trace name.
const ChartFile = "curve_%s.svg"

// WriteCharts draws, for every trace in results, the allocation ratio
// against arrived GPU demand (0..130 % of capacity) of each policy, mean over
// seeds, as an SVG in dir.
func WriteCharts(dir string, results []*Result) error {
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
		p := plot.New()
		p.Title.Text = "Allocation ratio, " + tr
		p.X.Label.Text = "arrived GPU demand (% of capacity)"
		p.Y.Label.Text = "allocated GPU (% of capacity)"
		p.Legend.Top, p.Legend.Left = true, true
		var lines []any
		for _, pol := range policies[tr] {
			k := key{tr, pol}
			var xy plotter.XYs
			for x := range sum[k] {
				if c := cnt[k][x]; c > 0 {
					xy = append(xy, plotter.XY{X: float64(x), Y: sum[k][x] / float64(c)})
				}
			}
			lines = append(lines, pol, xy)
		}
		if err := plotutil.AddLines(p, lines...); err != nil {
			return fmt.Errorf("drawing chart of %s: %w", tr, err)
		}
		path := filepath.Join(dir, fmt.Sprintf(ChartFile, strings.ReplaceAll(tr, string(filepath.Separator), "_")))
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return fmt.Errorf("writing chart %s: %w", path, err)
		}
	}
	return nil
}
