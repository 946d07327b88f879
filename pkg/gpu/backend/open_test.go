package backend_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("node.yaml", "name: lab-node\ngpus:\n  - model: l40s\n    count: 2\ntopology:\n  numa: [0, 1]\n")
	malformed := write("bad.yaml", "name: lab-node\ngpus:\n  - model: l40s\n    count: [2\n")
	unknownModel := write("model.yaml", "name: lab-node\ngpus:\n  - model: h800\n    count: 2\n")
	unknownField := write("field.yaml", "name: lab-node\ngpus:\n  - model: l40s\n    count: 2\n    memory: 48\n")

	tests := []struct {
		spec     string
		wantName string
		wantGPUs int
		wantSim  bool
		wantErr  []string
	}{
		{spec: "sim:dgx-h100", wantName: "sim:dgx-h100", wantGPUs: 8, wantSim: true},
		{spec: "sim:" + good, wantName: "sim:" + good, wantGPUs: 2, wantSim: true},
		{spec: "none", wantName: "none"},
		{spec: "sim:dgx-h800", wantErr: []string{`"sim:dgx-h800"`, "dgx-h100", "ws-2xrtx4090"}},
		{spec: "sim:" + malformed, wantErr: []string{"bad.yaml", "yaml: line"}},
		{spec: "sim:" + unknownModel, wantErr: []string{"model.yaml", `"h800"`, "l40s", "h100-sxm5-80gb"}},
		{spec: "sim:" + unknownField, wantErr: []string{"field.yaml", "memory"}},
		{spec: "sim:" + filepath.Join(dir, "missing.yaml"), wantErr: []string{"missing.yaml"}},
		{spec: "cuda", wantErr: []string{`unknown gpu backend "cuda"`, "auto, nvml, none or sim:<machine>", "dgx-a100"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			b, err := backend.Open(context.Background(), tt.spec)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Open(%q) succeeded, want an error", tt.spec)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("Open(%q) error %q does not mention %q", tt.spec, err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.spec, err)
			}
			defer b.Close()
			if b.Name() != tt.wantName || (b.Sim != nil) != tt.wantSim {
				t.Errorf("Open(%q) = %s (sim %v), want %s (sim %v)", tt.spec, b.Name(), b.Sim != nil, tt.wantName, tt.wantSim)
			}
			m, err := b.Discover(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Devices) != tt.wantGPUs {
				t.Errorf("Open(%q) discovers %d GPUs, want %d", tt.spec, len(m.Devices), tt.wantGPUs)
			}
		})
	}
}

// TestAutoWithoutDriver: on a machine without libnvidia-ml the agent keeps
// running with no devices and says why.
func TestAutoWithoutDriver(t *testing.T) {
	if _, err := nvmlbackend.System(); err == nil {
		t.Skip("skipping: libnvidia-ml loads on this machine; auto picks NVML here")
	}
	b, err := backend.Open(context.Background(), "auto")
	if err != nil {
		t.Fatalf("Open(auto): %v", err)
	}
	m, err := b.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != "none" || len(m.Devices) != 0 || !strings.Contains(m.Reason, "libnvidia-ml.so.1 not found") {
		t.Errorf("auto without a driver = %s with %d devices, reason %q", b.Name(), len(m.Devices), m.Reason)
	}
	if _, err := b.CreateMIGDevice(context.Background(), 0, "1g.10gb", 0); !errors.Is(err, gpu.ErrNoDevices) {
		t.Errorf("CreateMIGDevice on none = %v, want ErrNoDevices", err)
	}
	// nvml, asked for explicitly, fails instead of silently running without GPUs.
	if _, err := backend.Open(context.Background(), "nvml"); !errors.Is(err, gpu.ErrLibraryNotFound) {
		t.Errorf("Open(nvml) without a driver = %v, want ErrLibraryNotFound", err)
	}
}
