package replay

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The openb traces are not part of the repository; these tests read them
// from the shared checkout next to it and skip when it is absent.
var (
	tracesDir  = filepath.Join("..", "..", "..", "shared", "traces")
	anchorFile = filepath.Join("testdata", "fgd-anchor.csv")
	update     = flag.Bool("update", false, "rewrite testdata/*.golden and machines.json")
)

func loadOpenb(tb testing.TB, trace string) (*Cluster, *Trace) {
	tb.Helper()
	nodes := filepath.Join(tracesDir, "openb_node_list_gpu_node.csv")
	pods := filepath.Join(tracesDir, "openb_pod_list_"+trace+".csv")
	for _, f := range []string{nodes, pods} {
		if _, err := os.Stat(f); err != nil {
			tb.Skipf("openb traces not available (%v); they live in ../shared/traces next to the repository", err)
		}
	}
	c, err := LoadCluster(nodes)
	if err != nil {
		tb.Fatal(err)
	}
	tr, err := LoadTrace(pods, c)
	if err != nil {
		tb.Fatal(err)
	}
	return c, tr
}

// TestOpenbDefault checks the published facts of the default trace and pins
// one seed's replay of every baseline (a golden file: any change in the
// protocol's semantics shows up here), which must also stay near the
// 10-seed anchor.
func TestOpenbDefault(t *testing.T) {
	c, tr := loadOpenb(t, "default")
	if len(c.Nodes) != 1213 || c.TotalGPUs() != 6212 || c.TotalCPU() != 107018000 {
		t.Errorf("cluster: %d nodes, %d GPUs, %d milli-CPU", len(c.Nodes), c.TotalGPUs(), c.TotalCPU())
	}
	if len(tr.Pods) != 8152 || len(tr.Target.Shapes) != 35 || tr.Target.Covered != 7766 || len(tr.Issues.List) != 0 {
		t.Errorf("trace: %d pods, M has %d shapes covering %d, %d issues",
			len(tr.Pods), len(tr.Target.Shapes), tr.Target.Covered, len(tr.Issues.List))
	}
	var cpuShare float64
	for _, s := range tr.Target.Shapes {
		if s.G == 0 {
			cpuShare += s.P
		}
	}
	if math.Abs(cpuShare-0.136) > 0.005 {
		t.Errorf("CPU-only share of M = %.3f, want about 0.136", cpuShare)
	}

	anchors, err := LoadAnchors(anchorFile)
	if err != nil {
		t.Skipf("anchor not available: %v", err)
	}
	var b strings.Builder
	for _, p := range Baselines() {
		res, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: p, Seed: 42, Tune: DefaultTune})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s pods=%d added=%d placed=%d failed=%d alloc@100=%.2f alloc@130=%.2f\n",
			p.Name(), res.Pods, res.Added, res.Placed, res.Failed, res.Curve.At(100), res.Curve.At(130))
		// One seed against a 10-seed mean: seed-to-seed sd is up to 0.6.
		a, _ := anchors.Lookup("default", p.Name())
		if d := res.Curve.At(130) - a.At130; math.Abs(d) > 1 {
			t.Errorf("%s: alloc@130 %.2f is %.2f from the anchor %.2f", p.Name(), res.Curve.At(130), d, a.At130)
		}
	}
	golden := filepath.Join("testdata", "openb-default-seed42.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/replay -run TestOpenbDefault -update to create it)", err)
	}
	if b.String() != string(want) {
		t.Errorf("seed 42 replay changed:\n%s\nwant (%s):\n%s", b.String(), golden, want)
	}
}

// BenchmarkReplay replays one trace × seed of the default trace per policy:
// 8,152 pods tuned to about 10,900 arrivals on 1,213 nodes, every feasible
// node scored.
func BenchmarkReplay(b *testing.B) {
	c, tr := loadOpenb(b, "default")
	for _, p := range append(Baselines(), Tessera{}) {
		b.Run(p.Name(), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := Replay(context.Background(), RunSpec{Cluster: c, Trace: tr, Policy: p, Seed: int64(42 + i%10), Tune: DefaultTune}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
