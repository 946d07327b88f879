package deviceplugin_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
)

const sharedConfig = `version: v1
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
`

const partlySharedConfig = `version: v1
sharing:
  timeSlicing:
    renameByDefault: true
    resources:
    - name: nvidia.com/gpu
      devices: [0, 1]
      replicas: 2
`

// TestConfiguratorApply applies a sequence of label values, as
// pkg/mig/reconcile does when the node label or the config files change: a
// config that fails names the problem and leaves the last good one serving,
// and every outcome is counted.
func TestConfiguratorApply(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"shared": sharedConfig, "partly-shared.yaml": partlySharedConfig, "broken": "version: v1\nflags:\n  migStrategy: dual\n"} {
		write(name, content)
	}
	mgr := deviceplugin.NewManager(pluginConfig(), nil)
	c := deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: dir}, mgr, machine(t, "pcie-4xl40s", nil))
	reg := prometheus.NewPedanticRegistry()
	metrics, err := deviceplugin.NewMetrics(reg, mgr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetMetrics(metrics)

	steps := []struct {
		name        string
		label       string
		fix         string // rewrites the file "broken" with this config first
		wantErr     []string
		wantName    string
		wantApplied string
		want        map[string]int
	}{
		// With several configs and no default, no label cannot choose one.
		{name: "no label, several configs", label: "", wantErr: []string{"broken", "shared"}, want: map[string]int{}},
		{name: "shared", label: "shared", wantName: "shared", wantApplied: "shared", want: map[string]int{"nvidia.com/gpu": 16}},
		{name: "no label keeps serving", label: "", wantErr: []string{"shared"}, wantApplied: "shared", want: map[string]int{"nvidia.com/gpu": 16}},
		{name: "config file with an extension", label: "partly-shared", wantName: "partly-shared", wantApplied: "partly-shared",
			want: map[string]int{"nvidia.com/gpu": 2, "nvidia.com/gpu.shared": 4}},
		{name: "missing config", label: "missing", wantErr: []string{`"missing"`}, wantApplied: "partly-shared",
			want: map[string]int{"nvidia.com/gpu": 2, "nvidia.com/gpu.shared": 4}},
		{name: "invalid config", label: "broken", wantErr: []string{`"broken"`, "flags.migStrategy"}, wantApplied: "partly-shared",
			want: map[string]int{"nvidia.com/gpu": 2, "nvidia.com/gpu.shared": 4}},
		{name: "fixed file behind the same label", label: "broken", fix: sharedConfig, wantName: "broken", wantApplied: "broken",
			want: map[string]int{"nvidia.com/gpu": 16}},
	}
	for _, tt := range steps {
		if tt.fix != "" {
			write("broken", tt.fix)
		}
		name, err := c.Apply(ctx, tt.label)
		switch {
		case len(tt.wantErr) > 0 && err == nil:
			t.Errorf("%s: Apply(%q) = %q, want an error", tt.name, tt.label, name)
		case len(tt.wantErr) == 0 && err != nil:
			t.Errorf("%s: Apply(%q): %v", tt.name, tt.label, err)
		case err != nil:
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: Apply(%q) error %q does not mention %q", tt.name, tt.label, err, w)
				}
			}
		case name != tt.wantName:
			t.Errorf("%s: Apply(%q) = %q, want %q", tt.name, tt.label, name, tt.wantName)
		}
		if got := c.Applied(); got != tt.wantApplied {
			t.Errorf("%s: Applied() = %q, want %q", tt.name, got, tt.wantApplied)
		}
		if got := resourceCounts(mgr); !maps.Equal(got, tt.want) {
			t.Errorf("%s: resources = %v, want %v", tt.name, got, tt.want)
		}
	}

	want := `
# HELP tessera_device_plugin_config_active 1 for the device-plugin configuration serving now.
# TYPE tessera_device_plugin_config_active gauge
tessera_device_plugin_config_active{config="broken"} 1
# HELP tessera_device_plugin_config_reloads_total Device-plugin configurations applied (result=success) or refused (result=failure, the last good one keeps serving).
# TYPE tessera_device_plugin_config_reloads_total counter
tessera_device_plugin_config_reloads_total{result="failure"} 4
tessera_device_plugin_config_reloads_total{result="success"} 3
# HELP tessera_device_plugin_devices Device IDs advertised to the kubelet, per resource and health.
# TYPE tessera_device_plugin_devices gauge
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/gpu"} 16
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/gpu"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tessera_device_plugin_config_active",
		"tessera_device_plugin_config_reloads_total", "tessera_device_plugin_devices"); err != nil {
		t.Error(err)
	}
}
