package replay

import (
	"context"
	"fmt"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// tesseraWith is Tessera with the default configuration changed by mutate.
func tesseraWith(mutate func(*scoring.Config)) Tessera {
	cfg := scoring.DefaultConfig()
	mutate(&cfg)
	return Tessera{Config: &cfg}
}

func TestTesseraReplay(t *testing.T) {
	// Two 2-GPU nodes. Half-GPU pods arrive first: Tessera, like FGD, packs
	// them onto shared GPUs so that the 2-GPU pods still find whole GPUs.
	c := newCluster(t, "n0,64000,262144,2,V100M16", "n1,64000,262144,2,V100M16")
	rows := append(podRows("a", 4, 1000, 1024, 1, 500, ""), podRows("b", 1, 1000, 1024, 2, 1000, "")...)
	tr := newTrace(t, c, rows...)
	res, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: Tessera{}, Seed: 42})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if res.Failed != 0 || res.Placed != 5 {
		t.Errorf("placed %d, failed %d; want 5 placed, 0 failed", res.Placed, res.Failed)
	}
	if res.Used != 4000 {
		t.Errorf("used %d milli, want 4000", res.Used)
	}
}

func TestTesseraPairsShareSizes(t *testing.T) {
	// Two 1-GPU nodes: n0 has 320 milli free, n1 has 460. A 230-milli pod
	// arrives. FGD's fragmentation alone prefers n0 (90 milli left, which no
	// shape can use, against 230 that only a 230 or 160 can); the expected
	// hole residue sees that n1's 230 left is exactly a second 230-milli pod,
	// and that n0's 320 would take the frequent 320-milli pods.
	c := newCluster(t, "n0,64000,262144,1,V100M16", "n1,64000,262144,1,V100M16")
	var rows []string
	for _, sh := range []struct{ n, g int }{{35, 810}, {10, 650}, {30, 470}, {15, 320}, {7, 230}, {3, 160}} {
		rows = append(rows, podRows(fmt.Sprintf("g%d", sh.g), sh.n, 1000, 1024, 1, sh.g, "")...)
	}
	tr := newTrace(t, c, rows...)
	tests := []struct {
		name   string
		policy Tessera
		want   int
	}{
		{"fragmentation alone", tesseraWith(func(c *scoring.Config) { c.HoleResidue, c.CPUStranded = 0, 0 }), 0},
		{"with hole residue", tesseraWith(func(c *scoring.Config) { c.CPUStranded = 0 }), 1},
		{"default", Tessera{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewState(c)
			st.Commit(podOf(0, 1, 680), 0, []int{0})
			st.Commit(podOf(0, 1, 540), 1, []int{0})
			sc := tt.policy.NewScorer(&Run{State: st, Trace: tr, Target: tr.Target, Rank: []int{0, 1}})
			p := podOf(1000, 1, 230)
			s0, s1 := sc.Score(p, 0), sc.Score(p, 1)
			got := 0
			if s1 > s0 {
				got = 1
			}
			if got != tt.want {
				t.Errorf("scores n0 %d, n1 %d: chose n%d, want n%d", s0, s1, got, tt.want)
			}
			if g := sc.SharedGPU(p, got); g != 0 {
				t.Errorf("SharedGPU = %d, want 0", g)
			}
		})
	}
}

func TestTesseraLeavesScarceModels(t *testing.T) {
	// Two P100 nodes with little CPU per GPU and four G2 nodes. Some pods
	// may only use P100s. An 810-milli pod that may go anywhere relieves the
	// P100 node's CPU-stranded GPUs (the CPU term pulls it there), but the
	// P100s are a ninth of the free capacity and the constrained pods need
	// them: with the scarcity term it goes to a G2.
	c := newCluster(t,
		"p0,16000,65536,2,P100", "p1,16000,65536,2,P100",
		"g0,96000,393216,8,G2", "g1,96000,393216,8,G2", "g2,96000,393216,8,G2", "g3,96000,393216,8,G2")
	var rows []string
	rows = append(rows, podRows("any", 40, 3152, 5600, 1, 810, "")...)
	rows = append(rows, podRows("big", 40, 12000, 32768, 1, 1000, "")...)
	rows = append(rows, podRows("cpu", 5, 32000, 32768, 0, 0, "")...)
	rows = append(rows, podRows("p100", 10, 3152, 5600, 1, 810, "P100")...)
	tr := newTrace(t, c, rows...)
	tests := []struct {
		name   string
		policy Tessera
		want   string
	}{
		{"without the scarcity term", tesseraWith(func(c *scoring.Config) { c.Scarcity = 0 }), "p0"},
		{"default", Tessera{}, "g0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewState(c)
			sc := tt.policy.NewScorer(&Run{State: st, Trace: tr, Target: tr.Target, Rank: []int{0, 1, 2, 3, 4, 5}})
			p := &tr.Pods[0] // "any-0000": 810 milli, no gpu_spec
			if p.Name != "any-0000" {
				t.Fatalf("pod 0 is %s", p.Name)
			}
			best, bestN := int64(0), -1
			for n := range c.Nodes {
				if s := sc.Score(p, n); bestN < 0 || s > best {
					best, bestN = s, n
				}
			}
			if got := c.Nodes[bestN].Name; got != tt.want {
				t.Errorf("chose %s, want %s", got, tt.want)
			}
		})
	}
}
