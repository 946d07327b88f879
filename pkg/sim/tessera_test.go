package sim

import (
	"context"
	"testing"
)

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
