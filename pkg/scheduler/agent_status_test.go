package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// TestAgentStatusesAreModels reads the GPUNode statuses the gpu-agent's
// publisher writes for simulated machines (pkg/inventory's golden files,
// produced by inventory.BuildStatus) and checks the scheduler trusts them and
// reads what they advertise.
func TestAgentStatusesAreModels(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, m *nodeModel)
	}{
		{"status-dgx-h100-mig-mixed.golden", func(t *testing.T, m *nodeModel) {
			if m.resources["nvidia.com/gpu"].kind != scoring.KindWhole || len(m.profiles) == 0 {
				t.Errorf("resources %+v profiles %v", m.resources, m.profiles)
			}
			for r, mode := range m.resources {
				// NVIDIA's resource names write a profile's "+" as ".":
				// nvidia.com/mig-1g.10gb.me is profile 1g.10gb+me.
				if p, ok := IsMIGResource(r); ok && (mode.kind != scoring.KindMIG || strings.ReplaceAll(mode.profile, "+", ".") != p) {
					t.Errorf("%s is %+v", r, mode)
				}
			}
		}},
		{"status-pcie-4xl40s-time-sliced.golden", func(t *testing.T, m *nodeModel) {
			// Time-sliced without a rename: nvidia.com/gpu counts units here.
			if m.resources["nvidia.com/gpu"].kind != scoring.KindShare || m.shareUnits["nvidia.com/gpu"] != 4 {
				t.Errorf("resources %+v units %v", m.resources, m.shareUnits)
			}
			if g := m.state.GPUs[0]; g.ShareFree != 1 {
				t.Errorf("gpu 0 has %d free units, want 1 (3 reported held)", g.ShareFree)
			}
			if m.state.GPUs[1].Healthy {
				t.Error("gpu 1 (xid 48) healthy")
			}
		}},
		{"status-ws-2xrtx4090.golden", func(t *testing.T, m *nodeModel) {
			if len(m.state.GPUs) != 2 || m.resources["nvidia.com/gpu"].kind != scoring.KindWhole {
				t.Errorf("gpus %d resources %+v", len(m.state.GPUs), m.resources)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "inventory", "testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			gn := &v1alpha1.GPUNode{}
			gn.Name = "node"
			if err := yaml.UnmarshalStrict(data, &gn.Status); err != nil {
				t.Fatal(err)
			}
			m, err := buildModel(gn)
			if err != nil {
				t.Fatalf("the scheduler does not trust the agent's status: %v", err)
			}
			tt.check(t, m)
		})
	}
}
