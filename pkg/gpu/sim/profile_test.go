package sim

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseProfileBadInput(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr []string // every substring must appear
	}{
		{
			name:    "malformed yaml names the line",
			yaml:    "name: x\ngpus:\n  - model: l40s\n   count: 1\n",
			wantErr: []string{"yaml: line 2"},
		},
		{
			name:    "empty document",
			yaml:    "  \n",
			wantErr: []string{"empty"},
		},
		{
			name:    "unknown top-level field",
			yaml:    "name: x\ngpu:\n  - model: l40s\n    count: 1\n",
			wantErr: []string{"line 2", "gpu", "known fields: name"},
		},
		{
			name:    "unknown nested field",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 1\ntopology:\n  nvswitches: true\n",
			wantErr: []string{"line 6", "nvswitches", "topology.nvswitch"},
		},
		{
			name:    "wrong type",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: many\n",
			wantErr: []string{"line 4", "many"},
		},
		{
			name:    "missing name",
			yaml:    "gpus:\n  - model: l40s\n    count: 1\n",
			wantErr: []string{"name: required"},
		},
		{
			name:    "no gpus",
			yaml:    "name: x\n",
			wantErr: []string{"gpus: at least one"},
		},
		{
			name:    "unknown model lists the known ones",
			yaml:    "name: x\ngpus:\n  - model: h100\n    count: 1\n",
			wantErr: []string{`gpus[0].model: unknown model "h100"`, "h100-sxm5-80gb", "rtx-4090", "l40s"},
		},
		{
			name:    "count below one",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 0\n",
			wantErr: []string{"gpus[0].count: must be at least 1, got 0"},
		},
		{
			name:    "topology index out of range",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\ntopology:\n  pcieSwitches: [[0, 2]]\n",
			wantErr: []string{"topology.pcieSwitches[0]: GPU index 2 out of range 0..1"},
		},
		{
			name:    "gpu in two pcie switches",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 3\ntopology:\n  pcieSwitches: [[0, 1], [1, 2]]\n",
			wantErr: []string{"topology.pcieSwitches[1]: GPU 1 is already in pcieSwitches[0]"},
		},
		{
			name:    "numa length",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 4\ntopology:\n  numa: [0, 0, 1]\n",
			wantErr: []string{"topology.numa: has 3 entries, want one NUMA node per GPU (4)"},
		},
		{
			name:    "negative numa",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 1\ntopology:\n  numa: [-1]\n",
			wantErr: []string{"topology.numa[0]: NUMA node -1 is negative"},
		},
		{
			name:    "nvlink bridges without nvlink",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\ntopology:\n  nvlinkBridges: [[0, 1]]\n",
			wantErr: []string{"topology.nvlinkBridges[0]: GPU 0 (l40s) has no NVLink", "NVLink models: a100-pcie-80gb"},
		},
		{
			name:    "nvswitch without nvlink",
			yaml:    "name: x\ngpus:\n  - model: rtx-4090\n    count: 2\ntopology:\n  nvswitch: true\n",
			wantErr: []string{"topology.nvswitch: GPU 0 (rtx-4090) has no NVLink"},
		},
		{
			name:    "nvswitch and bridges",
			yaml:    "name: x\ngpus:\n  - model: h100-sxm5-80gb\n    count: 2\ntopology:\n  nvswitch: true\n  nvlinkBridges: [[0, 1]]\n",
			wantErr: []string{"nvswitch and nvlinkBridges are mutually exclusive"},
		},
		{
			name:    "bridge of three",
			yaml:    "name: x\ngpus:\n  - model: a100-pcie-80gb\n    count: 3\ntopology:\n  nvlinkBridges: [[0, 1, 2]]\n",
			wantErr: []string{"a bridge joins exactly 2 GPUs, got 3"},
		},
		{
			name:    "bridge of different models",
			yaml:    "name: x\ngpus:\n  - model: a100-pcie-80gb\n    count: 1\n  - model: h100-sxm5-80gb\n    count: 1\ntopology:\n  nvlinkBridges: [[0, 1]]\n",
			wantErr: []string{"different models"},
		},
		{
			name:    "switch split across host bridges",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\ntopology:\n  pcieSwitches: [[0, 1]]\n  hostBridges: [[0], [1]]\n",
			wantErr: []string{"GPUs 0 and 1 share pcieSwitches[0] but not a hostBridges group"},
		},
		{
			name:    "host bridge across numa nodes",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\ntopology:\n  hostBridges: [[0, 1]]\n  numa: [0, 1]\n",
			wantErr: []string{"topology.hostBridges[0]: GPUs 0 and 1 are on different NUMA nodes"},
		},
		{
			name:    "bad pci bus id",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\npciBusIds: [\"0000:18:00.0\", \"18\"]\n",
			wantErr: []string{`pciBusIds[1]: "18" is not a PCI address like "0000:18:00.0"`},
		},
		{
			name:    "duplicate pci bus id",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\npciBusIds: [\"0000:18:00.0\", \"00000000:18:00.0\"]\n",
			wantErr: []string{"pciBusIds[1]", "repeats pciBusIds[0]"},
		},
		{
			name:    "pci bus id count",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 2\npciBusIds: [\"0000:18:00.0\"]\n",
			wantErr: []string{"pciBusIds: has 1 entries, want one per GPU (2)"},
		},
		{
			name:    "bad versions",
			yaml:    "name: x\ndriverVersion: latest\ncudaDriverVersion: \"12\"\ngpus:\n  - model: l40s\n    count: 1\n",
			wantErr: []string{`driverVersion: "latest"`, `cudaDriverVersion: "12"`},
		},
		{
			name:    "two documents",
			yaml:    "name: x\ngpus:\n  - model: l40s\n    count: 1\n---\nname: y\n",
			wantErr: []string{"more than one YAML document"},
		},
		{
			name:    "every problem is reported",
			yaml:    "name: x\ngpus:\n  - model: nope\n    count: 0\ntopology:\n  numa: [0]\n",
			wantErr: []string{"unknown model", "must be at least 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProfile([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseProfile succeeded, want an error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if _, err := New(Profile{Name: "x", GPUs: []GPUGroup{{Model: "nope", Count: 1}}}); err == nil {
				t.Errorf("New accepted an invalid profile")
			}
		})
	}
}

func TestParseProfileDefaults(t *testing.T) {
	tests := []struct {
		name        string
		yaml        string
		wantDriver  string
		wantCUDA    string
		wantNumGPUs int
	}{
		{"ampere", "name: x\ngpus:\n  - model: a100-sxm4-40gb\n    count: 2\n", "550.54.15", "12.4", 2},
		{"blackwell raises the default", "name: x\ngpus:\n  - model: l40s\n    count: 1\n  - model: b200-sxm-180gb\n    count: 1\n", "570.124.06", "12.8", 2},
		{"explicit wins", "name: x\ndriverVersion: \"560.35.03\"\ngpus:\n  - model: l40s\n    count: 3\n", "560.35.03", "12.4", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if p.DriverVersion != tt.wantDriver || p.CUDADriverVersion != tt.wantCUDA || p.NumGPUs() != tt.wantNumGPUs {
				t.Errorf("got driver %s cuda %s gpus %d, want %s %s %d", p.DriverVersion, p.CUDADriverVersion, p.NumGPUs(), tt.wantDriver, tt.wantCUDA, tt.wantNumGPUs)
			}
		})
	}
}

func TestBuiltinNames(t *testing.T) {
	want := []string{"dgx-a100", "dgx-b200", "dgx-h100", "dgx-h200", "pcie-4xl40s", "pcie-8xa100-80gb", "ws-2xrtx4090"}
	got := BuiltinNames()
	if !slices.Equal(got, want) {
		t.Fatalf("BuiltinNames() = %v, want %v", got, want)
	}
	for _, name := range got {
		p, err := builtinProfile(name)
		if err != nil {
			t.Errorf("built-in %s: %v", name, err)
			continue
		}
		if p.Name != name {
			t.Errorf("built-in %s is called %q inside", name, p.Name)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "node.yml")
	if err := os.WriteFile(good, []byte("name: node-a\ngpus:\n  - model: rtx-4090\n    count: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: node-b\ngpus: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		spec     string
		wantName string
		wantErr  []string
	}{
		{name: "builtin", spec: "dgx-h100", wantName: "dgx-h100"},
		{name: "file", spec: good, wantName: "node-a"},
		{name: "example", spec: "testdata/example-fleet.yaml", wantName: "example-fleet-node"},
		{name: "unknown builtin lists names", spec: "dgx-z100", wantErr: []string{`unknown built-in machine "dgx-z100"`, "dgx-a100", "ws-2xrtx4090"}},
		{name: "unreadable file", spec: filepath.Join(dir, "missing.yaml"), wantErr: []string{"reading machine description", "missing.yaml"}},
		{name: "invalid file names the file", spec: bad, wantErr: []string{"bad.yaml", "gpus: at least one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Open(tt.spec)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Open(%q) succeeded, want error", tt.spec)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.spec, err)
			}
			if m.Name() != tt.wantName {
				t.Errorf("Name() = %q, want %q", m.Name(), tt.wantName)
			}
		})
	}
}

func TestMIGProfileNames(t *testing.T) {
	tests := []struct {
		model string
		want  []string // by profile ID 0 (1g), 7 (1g+me), 9 (1g double memory), 1 (2g), 2 (3g), 3 (4g), 4 (7g)
	}{
		{"a100-sxm4-40gb", []string{"1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"}},
		{"a100-sxm4-80gb", []string{"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}},
		{"a100-pcie-80gb", []string{"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}},
		{"h100-sxm5-80gb", []string{"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}},
		{"h200-sxm5-141gb", []string{"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"}},
		{"b200-sxm-180gb", []string{"1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"}},
	}
	ids := []int{0, 7, 9, 1, 2, 3, 4}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			m := catalogue[tt.model]
			for i, id := range ids {
				if got := migProfileName(m, id, 0); got != tt.want[i] {
					t.Errorf("profile %d: got %s, want %s", id, got, tt.want[i])
				}
			}
		})
	}
}
