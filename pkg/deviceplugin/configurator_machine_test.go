package deviceplugin_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
)

func resourceCounts(mgr *deviceplugin.Manager) map[string]int {
	out := map[string]int{}
	for _, r := range mgr.Resources() {
		out[r.Name] = len(r.Devices)
	}
	return out
}

// TestSetMachine re-advertises after a MIG layout change with the config of
// the label last applied, and falls back to the built-in default when that
// config does not fit the new machine.
func TestSetMachine(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"mixed":  "version: v1\nflags:\n  migStrategy: mixed\n",
		"single": "version: v1\nflags:\n  migStrategy: single\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		label   string
		layout  map[int][]string
		want    map[string]int
		applied string
		wantErr []string
	}{
		{
			name: "mixed follows new MIG devices", label: "mixed",
			layout:  sameLayout([]int{0, 1}, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"),
			want:    map[string]int{"nvidia.com/gpu": 6, "nvidia.com/mig-1g.10gb": 14},
			applied: "mixed",
		},
		{
			name: "single on every GPU", label: "single",
			layout:  sameLayout(upTo(8), "3g.40gb", "3g.40gb"),
			want:    map[string]int{"nvidia.com/gpu": 16},
			applied: "single",
		},
		{
			name: "single no longer fits: built-in default", label: "single",
			layout: map[int][]string{0: {"3g.40gb"}, 1: {"1g.10gb"}},
			// Strategy none advertises only the GPUs without MIG.
			want:    map[string]int{"nvidia.com/gpu": 6},
			applied: "",
			wantErr: []string{`"single"`, "built-in default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := machine(t, "dgx-h100", nil), machine(t, "dgx-h100", tt.layout)
			mgr := deviceplugin.NewManager(pluginConfig(), nil)
			c := deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: dir}, mgr, before)
			if _, err := c.Apply(context.Background(), tt.label); err != nil {
				t.Fatal(err)
			}
			if got := resourceCounts(mgr); !maps.Equal(got, map[string]int{"nvidia.com/gpu": 8}) {
				t.Fatalf("before: resources = %v", got)
			}
			name, err := c.SetMachine(context.Background(), after)
			switch {
			case len(tt.wantErr) == 0 && err != nil:
				t.Fatalf("SetMachine: %v", err)
			case len(tt.wantErr) > 0 && err == nil:
				t.Fatal("SetMachine succeeded, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("SetMachine error %q does not mention %q", err, s)
				}
			}
			if name != tt.applied || c.Applied() != tt.applied {
				t.Errorf("SetMachine = %q, Applied() = %q, want %q", name, c.Applied(), tt.applied)
			}
			if got := resourceCounts(mgr); !maps.Equal(got, tt.want) {
				t.Errorf("after: resources = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestWithhold advertises withheld devices as unhealthy until released.
func TestWithhold(t *testing.T) {
	mach := machine(t, "dgx-h100", map[int][]string{0: {"3g.40gb", "3g.40gb"}})
	mgr := deviceplugin.NewManager(pluginConfig(), &fakeHealth{})
	if err := mgr.Update(mach, deviceplugin.Options{MIGStrategy: deviceplugin.MIGStrategyMixed}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if _, err := deviceplugin.NewMetrics(reg, mgr); err != nil {
		t.Fatal(err)
	}
	check := func(unhealthyGPU, unhealthyMIG int) {
		t.Helper()
		want := `
# HELP tessera_device_plugin_devices Device IDs advertised to the kubelet, per resource and health.
# TYPE tessera_device_plugin_devices gauge
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/gpu"} ` + strconv.Itoa(7-unhealthyGPU) + `
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/gpu"} ` + strconv.Itoa(unhealthyGPU) + `
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/mig-3g.40gb"} ` + strconv.Itoa(2-unhealthyMIG) + `
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/mig-3g.40gb"} ` + strconv.Itoa(unhealthyMIG) + `
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tessera_device_plugin_devices"); err != nil {
			t.Error(err)
		}
	}
	check(0, 0)
	// GPU 1 and one MIG device of GPU 0 (the other is kept).
	mgr.Withhold([]string{mach.Devices[1].UUID, mach.Devices[0].MIGDevices[0].UUID})
	check(1, 1)
	mgr.Withhold(nil)
	check(0, 0)
}
