package replay

import (
	"context"
	"fmt"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// discover returns what the gpu agent discovers on a simulated machine.
func discover(t *testing.T, name string) *gpu.Machine {
	t.Helper()
	b, err := backend.Open(context.Background(), "sim:"+name)
	if err != nil {
		t.Fatalf("opening sim:%s: %v", name, err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing sim:%s: %v", name, err)
		}
	}()
	m, err := b.Discover(context.Background())
	if err != nil {
		t.Fatalf("discovering sim:%s: %v", name, err)
	}
	return m
}

// TestTraceNodeMatchesDiscoveredNode builds one node twice: from a trace
// row (TraceNodeSpec, as the replay does) and from a simulated DGX A100's
// discovery (scoring.SpecFromMachine, as the scheduler will from a GPUNode,
// its GPUs time-shared into 1000 units that may also go whole), with the
// same pods running on both. The same pods then score the same on both:
// bit for bit once the trace node is given the machine's link matrix and
// NUMA nodes (which a trace does not have); as the replay builds it, the
// same fragmentation, CPU, hole and product terms, and for shares and
// CPU-only pods the same key and devices: only the interconnect terms of
// whole GPUs (the set's links, NVLink islands kept) differ.
func TestTraceNodeMatchesDiscoveredNode(t *testing.T) {
	m := discover(t, "dgx-a100")
	product := m.Devices[0].Product
	const cpu, mem = 256_000, 1 << 20
	c := newCluster(t, fmt.Sprintf("dgx,%d,%d,%d,%s", cpu, mem, len(m.Devices), product))
	st := NewState(c)
	// Running pods: 2 whole GPUs, 470 and 230 milli of GPU 2, 650 of GPU 3.
	running := []struct {
		cpu, mem int64
		k        int
		g        int64
		gpus     []int
	}{{16_000, 64 << 10, 2, 1000, []int{0, 1}}, {4000, 8 << 10, 1, 470, []int{2}}, {2000, 4 << 10, 1, 230, []int{2}}, {8000, 32 << 10, 1, 650, []int{3}}}
	spec := scoring.SpecFromMachine("dgx", m, cpu, mem)
	for i := range spec.GPUs {
		spec.GPUs[i].ShareUnits, spec.GPUs[i].ShareWhole = MilliPerGPU, true
	}
	for _, p := range running {
		st.Commit(&Pod{CPU: p.cpu, Memory: p.mem, K: p.k, G: p.g}, 0, p.gpus)
		a := scoring.Allocation{CPU: p.cpu, Memory: p.mem}
		if p.g == MilliPerGPU {
			a.GPUs = p.gpus
		} else {
			a.Shares = []scoring.ShareAllocation{{GPU: p.gpus[0], Units: int(p.g)}}
		}
		spec.Allocations = append(spec.Allocations, a)
	}
	fromTrace := TraceNodeSpec(c, 0, &st.Nodes[0])
	linked := TraceNodeSpec(c, 0, &st.Nodes[0])
	linked.Links = m.Topology.Links
	for i := range linked.GPUs {
		linked.GPUs[i].NUMANode = m.Devices[i].NUMANode
	}

	target := []scoring.Demand{{GPUs: 1, CPU: 8000}, {GPUs: 4, CPU: 32_000}, {ShareUnits: 470, UnitsPerGPU: 1000, CPU: 4000},
		{ShareUnits: 230, UnitsPerGPU: 1000, CPU: 2000}, {CPU: 16_000}}
	pods := append(target, scoring.Demand{GPUs: 2, CPU: 16_000, Memory: 64 << 10}, scoring.Demand{ShareUnits: 320, UnitsPerGPU: 1000, CPU: 3000})
	score := func(ns scoring.NodeSpec) []scoring.Result {
		t.Helper()
		s, err := scoring.NewScorer(scoring.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		var reqs []*scoring.Request
		for _, d := range target {
			r, err := s.Compile(d)
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, r)
		}
		if err := s.SetTarget(reqs, []float64{3, 1, 2, 2, 1}); err != nil {
			t.Fatal(err)
		}
		state, err := scoring.NewNodeState(ns)
		if err != nil {
			t.Fatalf("NewNodeState(%s): %v", ns.Name, err)
		}
		n, err := s.NewNode(state)
		if err != nil {
			t.Fatal(err)
		}
		var out []scoring.Result
		for _, d := range pods {
			r, err := s.Compile(d)
			if err != nil {
				t.Fatal(err)
			}
			res := s.Score(n, r)
			if res.Err != nil {
				t.Fatalf("%+v on %s: %v", d, ns.Name, res.Err)
			}
			out = append(out, res)
		}
		return out
	}
	machine, trace, traceLinked := score(spec), score(fromTrace), score(linked)
	for i, d := range pods {
		if got, want := fmt.Sprintf("%+v", traceLinked[i]), fmt.Sprintf("%+v", machine[i]); got != want {
			t.Errorf("%+v: trace node with the machine's links scores\n%s\nthe discovered node\n%s", d, got, want)
		}
		tr, mc := trace[i], machine[i]
		if tr.Drop != mc.Drop || tr.FragmentationDrop != mc.FragmentationDrop || tr.Product != mc.Product || tr.Packing != mc.Packing {
			t.Errorf("%+v: trace node drop %v (fragmentation %v, product %v, packing %v), discovered node %v (%v, %v, %v)",
				d, tr.Drop, tr.FragmentationDrop, tr.Product, tr.Packing, mc.Drop, mc.FragmentationDrop, mc.Product, mc.Packing)
		}
		if d.GPUs == 0 && (tr.Key != mc.Key || fmt.Sprint(tr.Assignment) != fmt.Sprint(mc.Assignment)) {
			t.Errorf("%+v: trace node key %d gpus %v, discovered node %d %v", d, tr.Key, tr.Assignment, mc.Key, mc.Assignment)
		}
		if d.GPUs >= 2 && (tr.Interconnect != 0 || mc.Interconnect <= 0.75) {
			t.Errorf("%+v: interconnect %v on the trace node (no links: want 0), %v on the DGX (all NVLinked: want > 0.75)", d, tr.Interconnect, mc.Interconnect)
		}
		if d.GPUs >= 1 && (tr.Keep != 1 || tr.HardwareCost != scoring.DefaultConfig().Weights.Interconnect*(1-tr.Interconnect)) {
			t.Errorf("%+v: trace node keep %v, hardware cost %v: a node without links keeps nothing", d, tr.Keep, tr.HardwareCost)
		}
	}
}
