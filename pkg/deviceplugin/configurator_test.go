package deviceplugin_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
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

// TestConfigFollowsNodeLabel relabels a Node of a real kube-apiserver and
// checks the advertised resources and the Events.
func TestConfigFollowsNodeLabel(t *testing.T) {
	cp := k8stest.StartForTest(t)
	client := cp.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const nodeName = "gpu-node-1"
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range map[string]string{"shared": sharedConfig, "partly-shared.yaml": partlySharedConfig, "broken": "version: v1\nflags:\n  migStrategy: dual\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mach := machine(t, "pcie-4xl40s", nil)
	mgr := deviceplugin.NewManager(pluginConfig(), nil)
	c := deviceplugin.NewConfigurator(deviceplugin.ConfigSource{Dir: dir}, mgr, mach)
	reg := prometheus.NewPedanticRegistry()
	metrics, err := deviceplugin.NewMetrics(reg, mgr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetMetrics(metrics)
	// With several configs and no default, the agent refuses to start without a label.
	if _, err := c.Apply(ctx, ""); err == nil {
		t.Fatal("Apply with no label, no default and several configs succeeded")
	}
	if _, err := c.Apply(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, client, nodeName) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	counts := func() map[string]int {
		out := map[string]int{}
		for _, r := range mgr.Resources() {
			out[r.Name] = len(r.Devices)
		}
		return out
	}
	label := func(value string) {
		t.Helper()
		patch := `{"metadata":{"labels":{"nvidia.com/device-plugin.config":"` + value + `"}}}`
		if _, err := client.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitCounts := func(want map[string]int) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			got := counts()
			if len(got) != len(want) {
				return false, nil
			}
			for k, v := range want {
				if got[k] != v {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("resources = %v, want %v", counts(), want)
		}
	}
	waitEvent := func(reason, contains string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == nodeName && e.Reason == reason && strings.Contains(e.Message, contains) {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("no %s event on the node mentioning %q: %v", reason, contains, err)
		}
	}

	// No label yet: Run's first pass cannot choose among several configs,
	// reports it and keeps serving "shared".
	waitEvent(deviceplugin.ReasonConfigFailed, `still serving "shared"`)
	waitCounts(map[string]int{"nvidia.com/gpu": 16})

	label("partly-shared")
	waitCounts(map[string]int{"nvidia.com/gpu": 2, "nvidia.com/gpu.shared": 4})
	waitEvent(deviceplugin.ReasonConfigApplied, `"partly-shared" applied`)

	label("missing")
	waitEvent(deviceplugin.ReasonConfigFailed, `"missing"`)
	label("broken")
	waitEvent(deviceplugin.ReasonConfigFailed, "flags.migStrategy")
	waitCounts(map[string]int{"nvidia.com/gpu": 2, "nvidia.com/gpu.shared": 4})

	// A fixed file behind the same label is picked up without a relabel.
	if err := os.WriteFile(filepath.Join(dir, "broken"), []byte(sharedConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	waitCounts(map[string]int{"nvidia.com/gpu": 16})

	// Outcomes are metrics too.
	want := `
# HELP tessera_device_plugin_config_active 1 for the device-plugin configuration serving now.
# TYPE tessera_device_plugin_config_active gauge
tessera_device_plugin_config_active{config="broken"} 1
# HELP tessera_device_plugin_devices Device IDs advertised to the kubelet, per resource and health.
# TYPE tessera_device_plugin_devices gauge
tessera_device_plugin_devices{health="Healthy",resource="nvidia.com/gpu"} 16
tessera_device_plugin_devices{health="Unhealthy",resource="nvidia.com/gpu"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tessera_device_plugin_config_active", "tessera_device_plugin_devices"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "tessera_device_plugin_config_reloads_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			result, n := m.GetLabel()[0].GetValue(), m.GetCounter().GetValue()
			if (result == "failure" && n < 4) || (result == "success" && n < 3) {
				t.Errorf("config reloads %s = %v, want at least 4 failures (first Apply, no label, missing, broken) and 3 successes", result, n)
			}
		}
	}
}
