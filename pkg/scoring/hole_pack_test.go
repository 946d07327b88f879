package scoring

import (
	"testing"
)

// TestHolePackSmallCluster mimics the e2e fleet (test/e2e TestFleet): a
// small cluster whose one time-shared node has 4 GPUs in quarters, and
// notebooks of 1, 1 and 2 units that arrive after a few whole-GPU pods.
// They must share one GPU. The target refreshes as the 2-unit pod arrives,
// so the hole census sees the 2-unit hole the first two left: the pods to
// come are expected to fill it, and were a GPU with every unit free counted
// as opened for sure (by pods that leave a 3-unit hole no one fills), a
// fresh GPU would look worse than that hole and the 2-unit pod would open
// one rather than fill it.
func TestHolePackSmallCluster(t *testing.T) {
	s, err := NewScorer(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(d Demand) *Request {
		d.CPU, d.Memory = 1000, 4<<10
		r, err := s.Compile(d)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	add := func(name, product string, gpus, units int) *NodeCache {
		spec := NodeSpec{Name: name, CPU: 64000, Memory: 1 << 30}
		for range gpus {
			spec.GPUs = append(spec.GPUs, GPUSpec{Product: product, NUMANode: -1, Healthy: true, ShareUnits: units})
		}
		st, err := NewNodeState(spec)
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.NewNode(st)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	add("h100", "H100", 8, 0)
	add("l40s", "L40S", 4, 0)
	ts := add("ts", "L40S", 4, 4)
	for _, d := range []Demand{{GPUs: 4}, {GPUs: 4}, {GPUs: 4}, {GPUs: 1}, {GPUs: 1}} {
		s.Observe(mk(d))
	}
	var gpus []int
	for _, u := range []int{1, 1, 2} {
		r := mk(Demand{ShareUnits: u, UnitsPerGPU: 4})
		s.Observe(r)
		res := s.Score(ts, r)
		if res.Err != nil {
			t.Fatalf("%d-unit pod: %v", u, res.Err)
		}
		if err := ts.Assume(r, res.Assignment); err != nil {
			t.Fatalf("%d-unit pod: %v", u, err)
		}
		gpus = append(gpus, res.Assignment.GPUs[0])
	}
	if gpus[0] != gpus[1] || gpus[1] != gpus[2] {
		t.Errorf("the 1-, 1- and 2-unit pods went to GPUs %v, want one GPU", gpus)
	}
}
