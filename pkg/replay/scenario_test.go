package replay

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

func TestScenarioValidate(t *testing.T) {
	base := func() Scenario { s, _ := LookupScenarios("small"); return s[0] }
	for _, tc := range []struct {
		name    string
		mutate  func(*Scenario)
		wantErr string
	}{
		{name: "built-in", mutate: func(*Scenario) {}},
		{name: "unknown machine", mutate: func(s *Scenario) { s.Nodes[0].Machine = "dgx-z9" },
			wantErr: `node group 0 (dgx-h100): unknown machine "dgx-z9"`},
		{name: "mig on a gpu without mig", mutate: func(s *Scenario) { s.Nodes[3].MIG = map[int][]string{0: {"1g.10gb"}} },
			wantErr: "node group l40s gpu 0: mig layout [1g.10gb] on a gpu without mig"},
		{name: "mig layout that does not fit", mutate: func(s *Scenario) { s.Nodes[0].MIG = map[int][]string{2: {"4g.40gb", "4g.40gb"}} },
			wantErr: "node group dgx-h100 gpu 2: mig layout [4g.40gb 4g.40gb]: no free placement left for 4g.40gb"},
		{name: "unknown mig profile", mutate: func(s *Scenario) { s.Nodes[0].MIG = map[int][]string{1: {"5g.50gb"}} },
			wantErr: `mig profile "5g.50gb" is not offered`},
		{name: "mig gpu out of range", mutate: func(s *Scenario) { s.Nodes[3].MIG = map[int][]string{7: {"1g.10gb"}} },
			wantErr: "mig layout for gpu 7, machine pcie-4xl40s has gpus 0 to 3"},
		{name: "zero count", mutate: func(s *Scenario) { s.Nodes[1].Count = 0 }, wantErr: "node group 1 (dgx-h100-mig): count 0"},
		{name: "pod weight", mutate: func(s *Scenario) { s.Pods[2].Weight = 0 }, wantErr: "pod kind 2 (train-2gpu): weight 0"},
		{name: "pod demand", mutate: func(s *Scenario) { s.Pods[0].Demand.MIGProfile = "1g.10gb" }, wantErr: "pod kind 0 (train-8gpu): demand asks for 8 gpus, mig profile"},
		{name: "load", mutate: func(s *Scenario) { s.Load = 0 }, wantErr: "load 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.Nodes = append([]NodeGroup(nil), s.Nodes...)
			s.Pods = append([]PodKind(nil), s.Pods...)
			tc.mutate(&s)
			err := s.Validate()
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestLookupErrors(t *testing.T) {
	if _, err := LookupScenarios("mixed,tiny"); err == nil || !strings.Contains(err.Error(), `unknown scenario "tiny": allowed values are mixed, small or all`) {
		t.Errorf("LookupScenarios: %v", err)
	}
	if _, err := ParseScenarioPolicies("tessera,kube"); err == nil || !strings.Contains(err.Error(), `unknown policy "kube": allowed values are tessera, fgd, bestfit, random or all`) {
		t.Errorf("ParseScenarioPolicies: %v", err)
	}
	if err := (&ScenarioConfig{}).Validate(); err == nil || !strings.Contains(err.Error(), "seeds: at least one seed") {
		t.Errorf("ScenarioConfig.Validate: %v", err)
	}
}

// strandedNode builds a cached node of a built-in machine, letting mutate
// change its state first.
func strandedNode(t *testing.T, s *scoring.Scorer, machine string, g NodeGroup, mutate func(*scoring.NodeState)) *scoring.NodeCache {
	t.Helper()
	m, err := LookupMachine(machine)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.nodeState(machine, m)
	if err != nil {
		t.Fatal(err)
	}
	mutate(&st)
	n, err := s.NewNode(st)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStrandedCauses(t *testing.T) {
	s, err := scoring.NewScorer(scoring.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	req := func(d scoring.Demand) *scoring.Request {
		r, err := s.Compile(d)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	big := NodeGroup{CPU: 64 * core, Memory: 512 * gib}
	// 2 cores left on an idle L40S server: 4 GPUs CPU-stranded for a kind of 8 cores.
	cpuShort := strandedNode(t, s, "pcie-4xl40s", big, func(st *scoring.NodeState) { st.CPUFree = 2 * core })
	// Seven free 1g.10gb slices: MIG-stranded for a 2g.20gb kind (7/7 GPU).
	mig := strandedNode(t, s, "dgx-h100", NodeGroup{Name: "mig", CPU: 64 * core, Memory: 512 * gib, MIG: map[int][]string{0: dgxMIG[0]}},
		func(st *scoring.NodeState) {
			for i := 1; i < 8; i++ {
				st.GPUs[i].Used = true
			}
		})
	// Four shared GPUs with 1 of 4 units free: share-stranded for 2 units (4 × 1/4).
	share := strandedNode(t, s, "pcie-4xl40s", NodeGroup{CPU: 64 * core, Memory: 512 * gib, ShareUnits: 4}, func(st *scoring.NodeState) {
		for i := range st.GPUs {
			st.GPUs[i].ShareFree = 1
		}
	})
	// One free L40S: set-size stranded for a 2-gpu kind, product-stranded for an H100-only kind.
	one := strandedNode(t, s, "pcie-4xl40s", big, func(st *scoring.NodeState) {
		for i := 1; i < 4; i++ {
			st.GPUs[i].Used = true
		}
	})
	nodes := []*scoring.NodeCache{cpuShort, mig, share, one}
	for _, tc := range []struct {
		name   string
		failed []*scoring.Request
		want   Stranded
	}{
		{name: "cpu, mig, share, set size", failed: []*scoring.Request{
			req(scoring.Demand{GPUs: 2, CPU: 8 * core}), req(scoring.Demand{MIGProfile: "2g.20gb"}), req(scoring.Demand{ShareUnits: 2}),
		}, want: Stranded{CPU: 4, MIGGeometry: 1, ShareSliver: 1, SetSize: 1}},
		{name: "product", failed: []*scoring.Request{req(scoring.Demand{GPUs: 1, Allowed: []string{ProductH100}})},
			want: Stranded{Product: 5}},
		{name: "nothing failed", want: Stranded{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			free, got := stranded(nodes, tc.failed)
			if free != 4+1+1+1 {
				t.Errorf("free %v, want 7", free)
			}
			if d := math.Abs(got.CPU-tc.want.CPU) + math.Abs(got.Product-tc.want.Product) + math.Abs(got.MIGGeometry-tc.want.MIGGeometry) +
				math.Abs(got.ShareSliver-tc.want.ShareSliver) + math.Abs(got.SetSize-tc.want.SetSize); d > 1e-9 {
				t.Errorf("stranded %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestScenarioDeterministic(t *testing.T) {
	scs, err := LookupScenarios("small")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ScenarioPolicies() {
		a, err := RunScenario(context.Background(), &scs[0], p, 7)
		if err != nil {
			t.Fatal(err)
		}
		b, err := RunScenario(context.Background(), &scs[0], p, 7)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: two runs with seed 7 differ:\n%+v\n%+v", p.Name(), a, b)
		}
		if a.Placed+a.Failed != a.Pods || a.BestInterconnect > a.MultiGPU || a.NVLinked > a.NVLinkAvailable ||
			a.AllocatedGPUs > a.CapacityGPUs+1e-9 || a.Stranded.Total() > a.FreeGPUs+1e-9 ||
			a.AllocatedGPUs+a.FreeGPUs < a.CapacityGPUs-1e-9 || a.AllocatedGPUs+a.FreeGPUs > a.CapacityGPUs+1e-9 {
			t.Errorf("%s: inconsistent counts %+v", p.Name(), a)
		}
	}
}
