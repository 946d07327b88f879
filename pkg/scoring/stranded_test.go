package scoring_test

import (
	"math"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

func TestProductStranded(t *testing.T) {
	tests := []struct {
		name string
		// observe are the allowed products of the observed 1-GPU pods (nil:
		// any product).
		observe            [][]string
		wantL40S, wantH100 float64
	}{
		{name: "no pod observed", wantL40S: 0, wantH100: 0},
		{name: "no product constraint", observe: [][]string{nil, nil}, wantL40S: 0, wantH100: 0},
		{name: "three in four pods pinned to H100", observe: [][]string{{"H100"}, {"H100"}, {"H100"}, nil}, wantL40S: 4 * 0.75, wantH100: 0},
		{name: "pinned to either", observe: [][]string{{"H100"}, {"L40S"}}, wantL40S: 4 * 0.5, wantH100: 8 * 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No decay: every observed pod weighs the same.
			s := newScorer(t, func(c *scoring.Config) { c.TargetDecay = 1 })
			l40s := newNode(t, s, nodeState(t, "l40s", "pcie-4xl40s", nil))
			dgx := newNode(t, s, nodeState(t, "dgx", "dgx-h100", nil))
			product := map[string]string{"H100": dgx.State().GPUs[0].Product, "L40S": l40s.State().GPUs[0].Product}
			for _, allowed := range tt.observe {
				d := scoring.Demand{GPUs: 1}
				for _, p := range allowed {
					d.Allowed = append(d.Allowed, product[p])
				}
				r, err := s.Compile(d)
				if err != nil {
					t.Fatal(err)
				}
				s.Observe(r)
			}
			for _, c := range []struct {
				n    *scoring.NodeCache
				want float64
			}{{l40s, tt.wantL40S}, {dgx, tt.wantH100}} {
				if got := s.ProductStranded(c.n); math.Abs(got-c.want) > 1e-9 {
					t.Errorf("%s: %v GPUs stranded by product, want %v", c.n.State().Name, got, c.want)
				}
			}
		})
	}
}
