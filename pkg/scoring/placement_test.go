package scoring_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/scoring"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

const (
	h100 = "NVIDIA-H100-80GB-HBM3"
	l40s = "NVIDIA-L40S"
	a100 = "NVIDIA-A100-80GB-PCIe"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestProductScore(t *testing.T) {
	cfg := scoring.DefaultProductConfig()
	for _, tc := range []struct {
		name                        string
		product                     string
		allowed, preferred, present []string
		want                        float64
		wantOK                      bool
	}{
		{name: "cheapest allowed scores 1", product: l40s, allowed: []string{l40s, h100}, want: 1, wantOK: true},
		{name: "premium avoided when a cheaper allowed product fits", product: h100, allowed: []string{l40s, h100}, want: 0, wantOK: true},
		{name: "between the cheapest and the dearest allowed: linear in cost", product: a100, allowed: []string{l40s, a100, h100}, want: (4 - 2.5) / (4 - 1.5), wantOK: true},
		{name: "premium is the only allowed product", product: h100, allowed: []string{h100}, want: 1, wantOK: true},
		{name: "hard allowed set excludes the product", product: h100, allowed: []string{l40s}, want: 0, wantOK: false},
		{name: "no constraint: among every configured product (t4 0.4 to b200 8)", product: l40s, want: (8 - 1.5) / (8 - 0.4), wantOK: true},
		{name: "no constraint: among the present products", product: l40s, present: []string{l40s, h100}, want: 1, wantOK: true},
		{name: "cheaper allowed product absent from the cluster", product: h100, allowed: []string{l40s, h100}, present: []string{h100, a100}, want: 1, wantOK: true},
		{name: "preferred product scores 1", product: h100, allowed: []string{l40s, h100}, preferred: []string{h100}, want: 1, wantOK: true},
		{name: "not preferred: half", product: l40s, allowed: []string{l40s, h100}, preferred: []string{h100}, want: 0.5, wantOK: true},
		{name: "unknown product costs UnknownCost", product: "ACME-X1", want: (8 - 1) / (8 - 0.4), wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := cfg.ProductScore(tc.product, tc.allowed, tc.preferred, tc.present)
			if ok != tc.wantOK || !near(got, tc.want) {
				t.Errorf("ProductScore(%s, %v, %v, %v) = %v, %t; want %v, %t", tc.product, tc.allowed, tc.preferred, tc.present, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestProductConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*scoring.ProductConfig)
		wantErr []string // substrings of the error; none means valid
	}{
		{name: "default is valid", mutate: func(*scoring.ProductConfig) {}},
		{name: "zero cost names the class", mutate: func(c *scoring.ProductConfig) { c.Classes[2].Cost = 0 },
			wantErr: []string{"products.classes[2].cost", `class "h100"`, "positive finite"}},
		{name: "NaN cost", mutate: func(c *scoring.ProductConfig) { c.Classes[0].Cost = math.NaN() },
			wantErr: []string{"products.classes[0].cost", `class "b200"`}},
		{name: "negative unknown cost", mutate: func(c *scoring.ProductConfig) { c.UnknownCost = -1 },
			wantErr: []string{"products.unknownCost"}},
		{name: "duplicate class name", mutate: func(c *scoring.ProductConfig) { c.Classes[1].Name = "b200" },
			wantErr: []string{"products.classes[1].name", "b200 (also class 0)"}},
		{name: "empty class name", mutate: func(c *scoring.ProductConfig) { c.Classes[3].Name = "" },
			wantErr: []string{"products.classes[3].name", "Required"}},
		{name: "product in two classes", mutate: func(c *scoring.ProductConfig) { c.Classes[5].Products = append(c.Classes[5].Products, h100) },
			wantErr: []string{"products.classes[5].products[1]", "Duplicate value", "also lists it, in class"}},
		{name: "class without products", mutate: func(c *scoring.ProductConfig) { c.Classes[8].Products = nil },
			wantErr: []string{"products.classes[8].products", `class "t4" lists no product`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := scoring.DefaultProductConfig()
			tc.mutate(&c)
			errs := c.Validate(field.NewPath("products"))
			if len(tc.wantErr) == 0 {
				if len(errs) > 0 {
					t.Fatalf("Validate: %v", errs.ToAggregate())
				}
				return
			}
			if len(errs) == 0 {
				t.Fatalf("Validate accepted the config, want an error with %q", tc.wantErr)
			}
			msg := errs.ToAggregate().Error()
			for _, w := range tc.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*scoring.Config)
		wantErr string
	}{
		{name: "default", mutate: func(*scoring.Config) {}},
		{name: "negative weight", mutate: func(c *scoring.Config) { c.Weights.Keep = -1 }, wantErr: "weights.keep: Invalid value: -1"},
		{name: "all weights zero: fragmentation alone", mutate: func(c *scoring.Config) { c.Weights = scoring.PlacementWeights{} }},
		{name: "resolution", mutate: func(c *scoring.Config) { c.Resolution = 0 }, wantErr: "resolution: Invalid value: 0"},
		{name: "coverage", mutate: func(c *scoring.Config) { c.TargetCoverage = 1.5 }, wantErr: "targetCoverage"},
		{name: "hole residue", mutate: func(c *scoring.Config) { c.HoleResidue = -0.1 }, wantErr: "holeResidue: Invalid value: -0.1"},
		{name: "scarcity", mutate: func(c *scoring.Config) { c.Scarcity = math.NaN() }, wantErr: "scarcity: Invalid value"},
		{name: "shape scarcity", mutate: func(c *scoring.Config) { c.ShapeScarcity = -1 }, wantErr: "shapeScarcity: Invalid value"},
		{name: "share policy", mutate: func(c *scoring.Config) { c.SharePolicy = "spread" }, wantErr: `sharePolicy: Unsupported value: "spread"`},
		{name: "lookahead", mutate: func(c *scoring.Config) { c.Lookahead = []int{8, 1} }, wantErr: "lookahead[1]: Invalid value: 1"},
		{name: "decay", mutate: func(c *scoring.Config) { c.TargetDecay = 1.5 }, wantErr: "targetDecay"},
		{name: "bad product cost reaches NewScorer", mutate: func(c *scoring.Config) { c.Products.Classes[5].Cost = -2 }, wantErr: `products.classes[5].cost: Invalid value: -2: class "l40s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := scoring.DefaultConfig()
			tc.mutate(&cfg)
			_, err := scoring.NewScorer(cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewScorer: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("NewScorer error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDemandValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       scoring.Demand
		wantErr string
	}{
		{name: "whole", d: scoring.Demand{GPUs: 2}},
		{name: "cpu only", d: scoring.Demand{CPU: 1000}},
		{name: "two kinds", d: scoring.Demand{GPUs: 1, MIGProfile: "1g.10gb"}, wantErr: "want at most one of them"},
		{name: "negative gpus", d: scoring.Demand{GPUs: -1}, wantErr: "asks for -1 gpus"},
		{name: "negative units", d: scoring.Demand{ShareUnits: -2}, wantErr: "-2 share units"},
		{name: "empty product", d: scoring.Demand{GPUs: 1, Allowed: []string{""}}, wantErr: "empty product"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.d.Validate()
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestScorePremiumAvoided: a pod that allows L40S and H100 goes to the L40S
// node; one that allows only H100 cannot go there.
func TestScorePremiumAvoided(t *testing.T) {
	s := newScorer(t, nil)
	hn := newNode(t, s, nodeState(t, "h100", "dgx-h100", nil))
	ln := newNode(t, s, nodeState(t, "l40s", "pcie-4xl40s", nil))
	for _, tc := range []struct {
		name         string
		allowed      []string
		wantL40S     bool
		wantH100Prod float64
		wantL40SProd float64
	}{
		{name: "cheaper allowed fits", allowed: []string{l40s, h100}, wantL40S: true, wantH100Prod: 0, wantL40SProd: 1},
		{name: "hard allowed set", allowed: []string{h100}, wantL40S: false, wantH100Prod: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(t, s, scoring.Demand{GPUs: 1, CPU: 4000, Memory: 1024, Allowed: tc.allowed})
			hr, lr := s.Score(hn, r), s.Score(ln, r)
			if hr.Err != nil {
				t.Fatalf("h100 node: %v", hr.Err)
			}
			if !near(hr.Product, tc.wantH100Prod) {
				t.Errorf("h100 product score = %v, want %v", hr.Product, tc.wantH100Prod)
			}
			if !tc.wantL40S {
				if !errors.Is(lr.Err, scoring.ErrInfeasible) {
					t.Fatalf("l40s node: err = %v, want ErrInfeasible", lr.Err)
				}
				return
			}
			if lr.Err != nil {
				t.Fatalf("l40s node: %v", lr.Err)
			}
			if !near(lr.Product, tc.wantL40SProd) || lr.Key <= hr.Key {
				t.Errorf("l40s: product %v key %d; h100: key %d; want the l40s node to win with product %v", lr.Product, lr.Key, hr.Key, tc.wantL40SProd)
			}
		})
	}
}

// TestProductScorePresent: the product score ranks the products present on
// the scorer's nodes; once the L40S node is gone, H100 is the cheapest.
func TestProductScorePresent(t *testing.T) {
	s := newScorer(t, nil)
	hn := newNode(t, s, nodeState(t, "h100", "dgx-h100", nil))
	ln := newNode(t, s, nodeState(t, "l40s", "pcie-4xl40s", nil))
	r := compile(t, s, scoring.Demand{GPUs: 1, Allowed: []string{l40s, h100}})
	if got := s.Score(hn, r).Product; got != 0 {
		t.Fatalf("h100 product score with an l40s node present = %v, want 0", got)
	}
	s.RemoveNode(ln)
	if got := s.Score(hn, r).Product; got != 1 {
		t.Errorf("h100 product score after the l40s node left = %v, want 1", got)
	}
}

// TestTopologyKeepsNVLinkIsland uses the 8×A100 PCIe server whose GPUs are
// NVLink-bridged in pairs (0-1, 2-3, 4-5, 6-7; 12 links each).
func TestTopologyKeepsNVLinkIsland(t *testing.T) {
	s := newScorer(t, nil)
	// a: only the intact pair 0-1 is free. b: 2 (its partner 3 is used) and
	// the intact pair 4-5 are free.
	a := newNode(t, s, use(nodeState(t, "a", "pcie-8xa100-80gb", nil), 2, 3, 4, 5, 6, 7))
	b := newNode(t, s, use(nodeState(t, "b", "pcie-8xa100-80gb", nil), 0, 1, 3, 6, 7))
	one := compile(t, s, scoring.Demand{GPUs: 1})
	ra, rb := s.Score(a, one), s.Score(b, one)
	// a: the best 2-set (NV12) is gone after the placement: keep 0/1.
	// b: GPU 2 is taken and the pair 4-5 stays: keep 1/1.
	if ra.Keep != 0 || rb.Keep != 1 || ra.Interconnect != 1 || rb.Interconnect != 1 {
		t.Errorf("keep a=%v b=%v, interconnect a=%v b=%v; want keep 0 and 1, interconnect 1 (one gpu)", ra.Keep, rb.Keep, ra.Interconnect, rb.Interconnect)
	}
	if got := rb.Assignment.GPUs; len(got) != 1 || got[0] != 2 {
		t.Errorf("b assigns %v, want [2] (the gpu of the broken pair)", got)
	}
	// Product 1 (the only product present) and interconnect 1 cost
	// nothing; breaking the pair costs the keep weight (0.6 GPUs of
	// fragmentation): b ranks first.
	if !near(ra.HardwareCost, 0.6) || !near(rb.HardwareCost, 0) || rb.Key <= ra.Key {
		t.Errorf("hardware cost a=%v b=%v, keys %d and %d; want 0.6 and 0, b ahead", ra.HardwareCost, rb.HardwareCost, ra.Key, rb.Key)
	}

	two := compile(t, s, scoring.Demand{GPUs: 2})
	r2 := s.Score(b, two)
	if got := r2.Assignment.GPUs; len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Fatalf("b assigns %v to a 2-gpu pod, want [4 5] (the NVLink pair)", got)
	}
	if r2.Quality.MinNVLinks != 12 {
		t.Errorf("quality %v, want NV12", r2.Quality)
	}
	// Interconnect 0.75+0.25·12/18; the only pair is used up: keep 0.
	if want := 0.75 + 0.25*12.0/18; !near(r2.Interconnect, want) || r2.Keep != 0 {
		t.Errorf("interconnect %v keep %v, want %v and 0", r2.Interconnect, r2.Keep, want)
	}

	// An empty DGX H100: a 2-gpu pod takes the PIX pair 0-1 (NV18:
	// interconnect 1); the 8-set is lost, the best 4-set and 2-set stay.
	dgx := newNode(t, s, nodeState(t, "dgx", "dgx-h100", nil))
	r3 := s.Score(dgx, two)
	if got := r3.Assignment.GPUs; len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Errorf("dgx assigns %v, want [0 1]", got)
	}
	if r3.Interconnect != 1 || !near(r3.Keep, 2.0/3) {
		t.Errorf("dgx interconnect %v keep %v, want 1 and 2/3", r3.Interconnect, r3.Keep)
	}
}

func TestInterconnectScore(t *testing.T) {
	for _, tc := range []struct {
		q    topology.Quality
		want float64
	}{
		{topology.Quality{Size: 1}, 1},
		{topology.Quality{Size: 2, MinNVLinks: 18, PCIe: gpu.PathSingleSwitch}, 1},
		{topology.Quality{Size: 2, MinNVLinks: 12, PCIe: gpu.PathCrossCPU}, 0.75 + 0.25*12.0/18},
		{topology.Quality{Size: 2, PCIe: gpu.PathSingleSwitch}, 0.6},
		{topology.Quality{Size: 4, PCIe: gpu.PathCrossCPU, NUMANodes: 2}, 0.1},
		{topology.Quality{Size: 2, PCIe: gpu.PathUnknown}, 0},
	} {
		if got := scoring.InterconnectScore(tc.q); !near(got, tc.want) {
			t.Errorf("InterconnectScore(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

// TestMIGSlicePlacement: GPU 0 and 1 of a DGX H100 hold seven 1g.10gb
// slices each, GPU 2 two 3g.40gb; on GPU 0 the slices at 0, 1 and 2 are used.
func TestMIGSlicePlacement(t *testing.T) {
	sevenOnes := []string{"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}
	st := nodeState(t, "dgx", "dgx-h100", map[int][]string{0: sevenOnes, 1: sevenOnes, 2: {"3g.40gb", "3g.40gb"}})
	for j, sl := range st.GPUs[0].MIGSlices {
		st.GPUs[0].MIGSlices[j].Used = sl.Placement.Start <= 2
	}
	for _, tc := range []struct {
		name    string
		profile string
		wantGPU int
		want    gpu.Placement
		wantErr bool
	}{
		// Packing: GPU 0 has the fewest free memory slices. Of its free 1g
		// slices (3..6), taking 3 leaves 4-7 free, where a 3g.40gb still fits.
		{name: "1g packs and keeps a 3g placement", profile: "1g.10gb", wantGPU: 0, want: gpu.Placement{Start: 3, Size: 1}},
		// Taking the 3g at 4 leaves slices 0-3 free, where a 4g.40gb fits
		// (its only placement is 0); taking the one at 0 would not.
		{name: "3g keeps a 4g placement", profile: "3g.40gb", wantGPU: 2, want: gpu.Placement{Start: 4, Size: 4}},
		{name: "no 2g slice exists", profile: "2g.20gb", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScorer(t, nil)
			n := newNode(t, s, st)
			r := compile(t, s, scoring.Demand{MIGProfile: tc.profile})
			res := s.Score(n, r)
			if tc.wantErr {
				if !errors.Is(res.Err, scoring.ErrInfeasible) {
					t.Fatalf("err = %v, want ErrInfeasible", res.Err)
				}
				return
			}
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			a := res.Assignment
			if len(a.GPUs) != 1 || a.GPUs[0] != tc.wantGPU || a.Placement != tc.want || n.State().GPUs[a.GPUs[0]].MIGSlices[a.Slice].Placement != tc.want {
				t.Fatalf("assignment %+v, want gpu %d slice at %s", a, tc.wantGPU, tc.want)
			}
			if err := n.Assume(r, a); err != nil {
				t.Fatal(err)
			}
			if err := n.Assume(r, a); err == nil || !strings.Contains(err.Error(), "used=true") {
				t.Errorf("assuming the same slice twice: err = %v, want one saying it is used", err)
			}
			if next := s.Score(n, r); next.Err == nil && next.Assignment.GPUs[0] == a.GPUs[0] && next.Assignment.Slice == a.Slice {
				t.Errorf("after Assume the same slice is offered again: %+v", next.Assignment)
			}
		})
	}
}

func TestShareUnits(t *testing.T) {
	st := nodeState(t, "ts", "pcie-4xl40s", nil)
	for i, free := range []int{1, 3, 4, 4} {
		st.GPUs[i].Mode, st.GPUs[i].ShareTotal, st.GPUs[i].ShareFree = scoring.ModeShared, 4, free
	}
	st.GPUs[3].Healthy = false
	for _, tc := range []struct {
		units   int
		want    int
		wantErr bool
	}{
		{units: 1, want: 0},
		{units: 2, want: 1},
		{units: 4, want: 2},
		{units: 5, wantErr: true},
	} {
		s := newScorer(t, nil)
		n := newNode(t, s, st)
		res := s.Score(n, compile(t, s, scoring.Demand{ShareUnits: tc.units}))
		if tc.wantErr {
			if !errors.Is(res.Err, scoring.ErrInfeasible) {
				t.Errorf("%d units: err = %v, want ErrInfeasible", tc.units, res.Err)
			}
			continue
		}
		if res.Err != nil || len(res.Assignment.GPUs) != 1 || res.Assignment.GPUs[0] != tc.want {
			t.Errorf("%d units: %+v, %v; want gpu %d", tc.units, res.Assignment, res.Err, tc.want)
		}
	}
}

// TestAssumeForget: the cache follows Assume and Forget.
func TestAssumeForget(t *testing.T) {
	s := newScorer(t, nil)
	n := newNode(t, s, nodeState(t, "l", "pcie-4xl40s", nil))
	four := compile(t, s, scoring.Demand{GPUs: 4, CPU: 1000})
	one := compile(t, s, scoring.Demand{GPUs: 1, CPU: 1000})
	a := take(t, s, n, one)
	if res := s.Score(n, four); !errors.Is(res.Err, scoring.ErrInfeasible) {
		t.Fatalf("4 gpus after one was taken: %v, want ErrInfeasible", res.Err)
	}
	if total, free := n.Capacity(); total != 4 || free != 3 {
		t.Errorf("capacity %v free %v, want 4 and 3", total, free)
	}
	if err := n.Forget(one, a); err != nil {
		t.Fatal(err)
	}
	if res := s.Score(n, four); res.Err != nil {
		t.Fatalf("4 gpus after Forget: %v", res.Err)
	}
	if err := n.Forget(one, a); err == nil {
		t.Error("forgetting a free gpu succeeded")
	}
	if err := n.Assume(one, scoring.Assignment{GPUs: []int{9}}); err == nil || !strings.Contains(err.Error(), "gpu position 9") {
		t.Errorf("Assume of gpu 9: %v", err)
	}
	if err := n.SetHealthy(0, false); err != nil {
		t.Fatal(err)
	}
	if res := s.Score(n, four); !errors.Is(res.Err, scoring.ErrInfeasible) {
		t.Errorf("4 gpus with one unhealthy: %v, want ErrInfeasible", res.Err)
	}
	cpu := compile(t, s, scoring.Demand{GPUs: 1, CPU: n.State().CPUFree + 1})
	if res := s.Score(n, cpu); !errors.Is(res.Err, scoring.ErrInfeasible) || !strings.Contains(res.Err.Error(), "milli-cpu") {
		t.Errorf("too much cpu: %v", res.Err)
	}
}

// TestFragmentation is a hand-computed case: target half 2-gpu pods, half
// 1-gpu pods that need more CPU than the node has.
func TestFragmentation(t *testing.T) {
	s := newScorer(t, func(c *scoring.Config) { c.CPUStranded, c.HoleResidue = 0, 0 })
	n := newNode(t, s, use(nodeState(t, "l", "pcie-4xl40s", nil), 0))
	big := compile(t, s, scoring.Demand{GPUs: 1, CPU: n.State().CPUFree + 1})
	two := compile(t, s, scoring.Demand{GPUs: 2})
	if err := s.SetTarget([]*scoring.Request{two, big}, []float64{1, 1}); err != nil {
		t.Fatal(err)
	}
	// 3 GPUs free: the 2-gpu shape uses all of them, the other none.
	if got := s.Fragmentation(n); !near(got, 1.5) {
		t.Errorf("fragmentation %v, want 0.5·0 + 0.5·3 = 1.5", got)
	}
	// A 1-gpu pod leaves 2 free: before 1.5, after 0.5·2 = 1.
	res := s.Score(n, compile(t, s, scoring.Demand{GPUs: 1}))
	if !near(res.FragmentationDrop, 0.5) || !near(res.Drop, 0.5) {
		t.Errorf("fragmentation drop %v, drop %v, want 0.5 and 0.5", res.FragmentationDrop, res.Drop)
	}
	if err := s.SetTarget([]*scoring.Request{two}, []float64{1, 2}); err == nil {
		t.Error("SetTarget accepted 1 request with 2 weights")
	}
}

// TestCPUStranded: a 4-GPU node with 10 cores free; the target is 1-GPU
// pods of 10 cores (1 GPU per 10,000 milli-CPU), so 3 GPUs are
// CPU-stranded. A CPU-only pod of 5 cores leaves 3.5 stranded and the
// shape no longer fits (4 GPUs fragmented): before 0 + 3, after 4 + 3.5.
func TestCPUStranded(t *testing.T) {
	s := newScorer(t, func(c *scoring.Config) { c.CPUStranded = 1 })
	st := nodeState(t, "l", "pcie-4xl40s", nil)
	st.CPUFree = 10_000
	n := newNode(t, s, st)
	if err := s.SetTarget([]*scoring.Request{compile(t, s, scoring.Demand{GPUs: 1, CPU: 10_000})}, []float64{1}); err != nil {
		t.Fatal(err)
	}
	res := s.Score(n, compile(t, s, scoring.Demand{CPU: 5000}))
	if !near(res.Drop, -4.5) || !near(res.FragmentationDrop, -4) {
		t.Errorf("drop %v, fragmentation drop %v, want -4.5 and -4", res.Drop, res.FragmentationDrop)
	}
}

// TestSetFree: setting a node's free CPU and memory is taking (or giving
// back) a CPU-only pod of the difference, without compiling one, and a
// negative amount is refused with the node's name.
func TestSetFree(t *testing.T) {
	s := newScorer(t, nil)
	one := compile(t, s, scoring.Demand{GPUs: 1, CPU: 4000, Memory: 1 << 10})
	if err := s.SetTarget([]*scoring.Request{one}, []float64{1}); err != nil {
		t.Fatal(err)
	}
	set := newNode(t, s, nodeState(t, "set", "pcie-4xl40s", nil))
	took := newNode(t, s, nodeState(t, "took", "pcie-4xl40s", nil))
	cpu, mem := set.State().CPUFree, set.State().MemFree
	for _, c := range []struct{ cpu, mem int64 }{{cpu - 1000, mem}, {cpu - 7000, mem - 3<<10}, {3000, 0}} {
		// took gets a CPU-only pod of the difference.
		d := scoring.Demand{CPU: took.State().CPUFree - c.cpu, Memory: took.State().MemFree - c.mem}
		if err := took.Assume(compile(t, s, d), scoring.Assignment{}); err != nil {
			t.Fatal(err)
		}
		ver := set.Version()
		if err := set.SetFree(c.cpu, c.mem); err != nil {
			t.Fatalf("SetFree(%d, %d): %v", c.cpu, c.mem, err)
		}
		if set.Version() == ver {
			t.Errorf("SetFree(%d, %d) left the version at %d", c.cpu, c.mem, ver)
		}
		if got := set.State(); got.CPUFree != c.cpu || got.MemFree != c.mem {
			t.Errorf("free %d milli-cpu, %d MiB after SetFree(%d, %d)", got.CPUFree, got.MemFree, c.cpu, c.mem)
		}
		a, b := s.Score(set, one), s.Score(took, one)
		if (a.Err == nil) != (b.Err == nil) || a.Key != b.Key || a.Drop != b.Drop {
			t.Errorf("free %d, %d: SetFree scores %v (%v), the CPU-only pod %v (%v)", c.cpu, c.mem, a.Key, a.Err, b.Key, b.Err)
		}
	}
	ver := set.Version()
	if err := set.SetFree(set.State().CPUFree, set.State().MemFree); err != nil || set.Version() != ver {
		t.Errorf("SetFree to the same amounts: %v, version %d → %d", err, ver, set.Version())
	}
	if err := set.SetFree(-1, 0); err == nil || !strings.Contains(err.Error(), `"set"`) || !strings.Contains(err.Error(), "-1") {
		t.Errorf("SetFree(-1, 0): %v, want an error naming the node and the amount", err)
	}
}

func TestNodeStateValidate(t *testing.T) {
	base := func() scoring.NodeState { return nodeState(t, "n", "pcie-4xl40s", nil) }
	for _, tc := range []struct {
		name    string
		mutate  func(*scoring.NodeState)
		wantErr string
	}{
		{name: "valid", mutate: func(*scoring.NodeState) {}},
		{name: "share counts", mutate: func(s *scoring.NodeState) {
			s.GPUs[1].Mode, s.GPUs[1].ShareTotal, s.GPUs[1].ShareFree = scoring.ModeShared, 2, 3
		}, wantErr: `node "n" gpu 1: shared gpu has 3 of 2 units free`},
		{name: "mig without geometry", mutate: func(s *scoring.NodeState) { s.GPUs[2].Mode = scoring.ModeMIG }, wantErr: "gpu 2: mig gpu has no mig profiles"},
		{name: "topology size", mutate: func(s *scoring.NodeState) { s.GPUs = s.GPUs[:3] }, wantErr: "topology has 4 gpus, the node 3"},
		{name: "empty product", mutate: func(s *scoring.NodeState) { s.GPUs[0].Product = "" }, wantErr: "gpu 0: product is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := base()
			tc.mutate(&st)
			err := st.Validate()
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestStrandedPrice: where the products a pod may use differ in price, the
// GPUs a placement strands by CPU are priced with those it takes. The
// target is 1-GPU pods of 12 cores (1 GPU per 12,000 milli-CPU); the
// cluster has an L40S server (price 1.5) and a DGX H100 (4), so a pod that
// may use either has lo = 1.5, hi = 4 and the product weight is 2 (the
// interconnect terms are weighed 0 here).
func TestStrandedPrice(t *testing.T) {
	for _, tc := range []struct {
		name    string
		node    string // "l40s" or "h100"
		cpuFree int64
		demand  scoring.Demand
		// want is HardwareCost: 2 × (1 − product score) + 2 × price ×
		// stranded / (capacity × (hi − lo)).
		want float64
	}{
		{
			// 4 GPUs and 48 cores feed each other; the pod leaves 3 GPUs
			// and 8 cores, which feed 2/3 of one: 7/3 GPUs stranded.
			name: "a cpu-heavy pod on the cheap node pays for the gpus it strands", node: "l40s", cpuFree: 48_000,
			demand: scoring.Demand{GPUs: 1, CPU: 40_000}, want: 2 * 1.5 * (7.0 / 3) / 2.5,
		},
		{
			// 224 cores feed the 7 GPUs left: nothing stranded, the dearest
			// product's full cost.
			name: "the dear node strands nothing", node: "h100", cpuFree: 224_000,
			demand: scoring.Demand{GPUs: 1, CPU: 40_000}, want: 2,
		},
		{
			name: "one allowed product: no price to compare", node: "l40s", cpuFree: 48_000,
			demand: scoring.Demand{GPUs: 1, CPU: 40_000, Allowed: []string{"NVIDIA-L40S"}}, want: 0,
		},
		{
			// 24 cores feed 2 of the 4 GPUs; the pod takes one and 1 core,
			// leaving 23 cores for 3 GPUs: 13/12 stranded, 11/12 fewer.
			name: "a cpu-light pod that feeds stranded gpus pays less", node: "l40s", cpuFree: 24_000,
			demand: scoring.Demand{GPUs: 1, CPU: 1000}, want: 2 * 1.5 * (-11.0 / 12) / 2.5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScorer(t, func(c *scoring.Config) { c.Weights.Interconnect, c.Weights.Keep = 0, 0 })
			l40s := nodeState(t, "l40s", "pcie-4xl40s", nil)
			h100 := nodeState(t, "h100", "dgx-h100", nil)
			sts := map[string]*scoring.NodeState{"l40s": &l40s, "h100": &h100}
			sts[tc.node].CPUFree = tc.cpuFree
			nodes := map[string]*scoring.NodeCache{"l40s": newNode(t, s, l40s), "h100": newNode(t, s, h100)}
			if err := s.SetTarget([]*scoring.Request{compile(t, s, scoring.Demand{GPUs: 1, CPU: 12_000})}, []float64{1}); err != nil {
				t.Fatal(err)
			}
			res := s.Score(nodes[tc.node], compile(t, s, tc.demand))
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if !near(res.HardwareCost, tc.want) {
				t.Errorf("HardwareCost %v, want %v (product score %v)", res.HardwareCost, tc.want, res.Product)
			}
		})
	}
}

// TestShapeScarcity: the target is half 8-GPU pods of 64 cores, half 1-GPU
// pods. Four idle 8-GPU nodes can host an 8-GPU pod, four with 4 GPUs free
// cannot. Taking a GPU (or 70 of 128 cores) of an idle node loses one 8-GPU
// pod: 0.25 × 0.5 × 8 GPUs × (free capacity / capacity that hosts 8-GPU
// pods − 1); the nodes with 4 free lose none. The cost grows as the hosts
// are taken or leave the cluster, and is 0 without the weight.
func TestShapeScarcity(t *testing.T) {
	spec := func(name string, used ...int) scoring.NodeState {
		sp := scoring.NodeSpec{Name: name, CPU: 128_000, Memory: 1 << 20}
		for range 8 {
			sp.GPUs = append(sp.GPUs, scoring.GPUSpec{Product: "X", NUMANode: -1, Healthy: true})
		}
		if len(used) > 0 {
			sp.Allocations = []scoring.Allocation{{GPUs: used}}
		}
		st, err := scoring.NewNodeState(sp)
		if err != nil {
			t.Fatalf("NewNodeState(%s): %v", name, err)
		}
		return st
	}
	for _, tc := range []struct {
		name   string
		weight float64
		// taken idle nodes get an 8-GPU pod, removed ones leave (twice).
		taken, removed int
		pod            scoring.Demand
		want           float64 // the cost on an idle node
	}{
		{name: "one GPU, 32 of 48 free GPUs host", weight: 0.25, pod: scoring.Demand{GPUs: 1, CPU: 8000}, want: 0.25 * 0.5 * 8 * (48.0/32 - 1)},
		{name: "CPU alone", weight: 0.25, pod: scoring.Demand{CPU: 70_000}, want: 0.25 * 0.5 * 8 * (48.0/32 - 1)},
		{name: "CPU left for the shape", weight: 0.25, pod: scoring.Demand{CPU: 64_000}, want: 0},
		{name: "two hosts taken", weight: 0.25, taken: 2, pod: scoring.Demand{GPUs: 1, CPU: 8000}, want: 0.25 * 0.5 * 8 * (32.0/16 - 1)},
		{name: "two taken, one removed", weight: 0.25, taken: 2, removed: 1, pod: scoring.Demand{GPUs: 1, CPU: 8000}, want: 0.25 * 0.5 * 8 * (24.0/8 - 1)},
		{name: "off", weight: 0, taken: 2, pod: scoring.Demand{GPUs: 1, CPU: 8000}, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScorer(t, func(c *scoring.Config) { c.ShapeScarcity = tc.weight })
			big := compile(t, s, scoring.Demand{GPUs: 8, CPU: 64_000})
			if err := s.SetTarget([]*scoring.Request{big, compile(t, s, scoring.Demand{GPUs: 1, CPU: 8000})}, []float64{1, 1}); err != nil {
				t.Fatal(err)
			}
			var idle, part []*scoring.NodeCache
			for i := range 4 {
				idle = append(idle, newNode(t, s, spec(fmt.Sprintf("idle%d", i))))
				part = append(part, newNode(t, s, spec(fmt.Sprintf("part%d", i), 0, 1, 2, 3)))
			}
			for _, n := range idle[1 : 1+tc.taken] {
				take(t, s, n, big)
			}
			for _, n := range idle[1+tc.taken : 1+tc.taken+tc.removed] {
				s.RemoveNode(n)
				s.RemoveNode(n) // a second time changes nothing
			}
			r := compile(t, s, tc.pod)
			if got := s.Score(idle[0], r); got.Err != nil || !near(got.ScarcityCost, tc.want) {
				t.Errorf("idle node: scarcity cost %v (%v), want %v", got.ScarcityCost, got.Err, tc.want)
			}
			if got := s.Score(part[0], r); got.Err != nil || got.ScarcityCost != 0 {
				t.Errorf("node with 4 GPUs free: scarcity cost %v (%v), want 0", got.ScarcityCost, got.Err)
			}
		})
	}
}
