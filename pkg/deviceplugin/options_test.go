package deviceplugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
)

// TestConfigFiles resolves configuration files (NVIDIA's examples and
// Tessera's extensions) against simulated machines and counts the resources.
func TestConfigFiles(t *testing.T) {
	h100 := machine(t, "dgx-h100", map[int][]string{0: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}, 1: {"3g.40gb", "3g.40gb"}})
	tests := []struct {
		name    string
		file    string // in config/testdata
		yaml    string // used when file is empty
		want    map[string]int
		wantErr string
	}{
		{name: "NVIDIA time-slicing example", file: "nvidia-time-slicing-4.yaml",
			want: map[string]int{"nvidia.com/gpu": 6 * 4}},
		{name: "a device list naming MIG-enabled GPUs as whole GPUs", file: "tessera-per-gpu.yaml",
			// GPUs 0 and 1 are MIG-enabled here, so "0" is not a whole GPU.
			wantErr: `sharing.timeSlicing.resources[0].devices: "0" matches no device of this resource on this node (it has [2 3 4 5 6 7])`},
		{name: "replica counts per GPU", file: "tessera-replicas-per-gpu.yaml",
			wantErr: `sharing.timeSlicing.resources[0].devices: "0" matches no device`},
		{name: "replica counts per GPU on whole GPUs", yaml: `version: v1
sharing:
  timeSlicing:
    resources:
    - {name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, devices: [2, 3], replicas: 2}
    - {name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, devices: [4], replicas: 7}
`, want: map[string]int{"nvidia.com/gpu": 3, "nvidia.com/gpu.shared": 2*2 + 7}},
		{name: "first N devices and MIG index", yaml: `version: v1
flags: {migStrategy: mixed}
sharing:
  timeSlicing:
    resources:
    - {name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, devices: 2, replicas: 3}
    - {name: nvidia.com/mig-3g.40gb, rename: nvidia.com/mig-3g.40gb.shared, devices: ["1:0"], replicas: 2}
`, want: map[string]int{"nvidia.com/gpu": 4, "nvidia.com/gpu.shared": 6, "nvidia.com/mig-1g.10gb": 7, "nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-3g.40gb.shared": 2}},
		{name: "overlapping device lists", yaml: `version: v1
sharing:
  timeSlicing:
    resources:
    - {name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, devices: [2, 3], replicas: 2}
    - {name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, devices: [3, 4], replicas: 4}
`, wantErr: "sharing.timeSlicing.resources[0] and sharing.timeSlicing.resources[1] both cover device"},
		{name: "more devices than the node has", yaml: `version: v1
sharing:
  timeSlicing:
    resources:
    - {name: nvidia.com/gpu, devices: 9, replicas: 2}
`, wantErr: "sharing.timeSlicing.resources[0].devices: asks for the first 9 devices but this node has 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.yaml)
			if tt.file != "" {
				var err error
				if data, err = os.ReadFile(filepath.Join("config", "testdata", tt.file)); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := config.Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			o, err := deviceplugin.OptionsFromConfig(cfg, h100, deviceplugin.SharePacked)
			if err == nil {
				_, err = deviceplugin.Build(h100, o)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res, _ := deviceplugin.Build(h100, o)
			got := map[string]int{}
			for _, r := range res {
				got[r.Name] = len(r.Devices)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("resources = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("resources = %v, want %v", got, tt.want)
					break
				}
			}
		})
	}
}
