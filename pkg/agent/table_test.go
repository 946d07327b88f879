package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

// tableAccept asks the API server for its Table rendering, as kubectl get does.
const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io"

// TestGetGPUNodes runs three agents, built by agent.New, on three simulated
// machines against one real kube-apiserver with the GPUNode CRD, and reads
// `kubectl get gpunodes` as kubectl does: the API server's Table for the
// CRD's printer columns. It logs the table as kubectl prints it (default
// and -o wide), for docs/inventory.md.
func TestGetGPUNodes(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig()))
	if err := inventorytest.InstallCRD(ctx, cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	migFile, err := filepath.Abs("testdata/mig-parted.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dpDir := t.TempDir()
	for name, content := range map[string]string{"mixed": mixedConfig, "whole": "version: v1\n",
		"shared-4": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n"} {
		if err := os.WriteFile(filepath.Join(dpDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	machines := []struct {
		node, sim string
		labels    map[string]string
		// want are the default columns after NAME.
		want []string
	}{
		{"dgx-h100-0", "dgx-h100", map[string]string{reconcile.MIGConfigLabel: "dgx-mixed", reconcile.SharingConfigLabel: "mixed"},
			[]string{"8", "NVIDIA-H100-80GB-HBM3", "success", "0/24", "0"}},
		{"l40s-0", "pcie-4xl40s", map[string]string{reconcile.SharingConfigLabel: "shared-4"},
			[]string{"4", "NVIDIA-L40S", "", "0/4", "0"}},
		{"rtx4090-ws", "ws-2xrtx4090", nil,
			[]string{"2", "NVIDIA-GeForce-RTX-4090", "", "0/2", "0"}},
	}
	for _, m := range machines {
		if _, err := cp.Client().CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: m.node, Labels: m.labels}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kc, err := kube.NewForConfig(cp.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		gc, err := client.NewForConfig(cp.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		cfg := standaloneConfig(t, openSim(t, m.sim))
		cfg.Client, cfg.GPUNodes, cfg.NodeName = kc, gc, m.node
		cfg.PodResourcesSocket = podresourcestest.Start(t).Socket() // a kubelet with no pods
		cfg.DevicePluginConfigDir, cfg.DevicePluginConfigDefault, cfg.MIGConfigFile = dpDir, "whole", migFile
		cfg.InventoryMinWriteInterval, cfg.InventoryResyncInterval = 100*time.Millisecond, 100*time.Millisecond
		start(ctx, t, cfg)
	}

	gc, err := client.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	rows := map[string][]string{}
	shown := func() bool {
		raw, err := gc.RESTClient().Get().Resource(v1alpha1.Resource).SetHeader("Accept", tableAccept).DoRaw(ctx)
		if err != nil {
			t.Logf("getting the gpunodes table: %v", err)
			return false
		}
		table = metav1.Table{}
		if err := json.Unmarshal(raw, &table); err != nil {
			t.Fatalf("decoding the gpunodes table: %v\n%s", err, raw)
		}
		clear(rows)
		for _, r := range table.Rows {
			cells := make([]string, len(r.Cells))
			for i, c := range r.Cells {
				cells[i] = cell(c)
			}
			rows[cells[0]] = cells
		}
		for _, m := range machines {
			r, ok := rows[m.node]
			if !ok || strings.Join(columns(table, r, false)[1:6], "|") != strings.Join(m.want, "|") {
				return false
			}
		}
		return len(rows) == len(machines)
	}
	if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 60*time.Second, true,
		func(context.Context) (bool, error) { return shown(), nil }); err != nil {
		t.Fatalf("waiting for the three GPUNodes in the table: %v; last table:\n%s", err, render(table, true, time.Now()))
	}

	var names []string
	for _, c := range table.ColumnDefinitions {
		names = append(names, fmt.Sprintf("%s(%s,%d)", c.Name, c.Type, c.Priority))
	}
	if got, want := strings.Join(names, " "), "Name(string,0) GPUs(integer,0) Product(string,0) Layout(string,0) Config(string,1) "+
		"Allocated(string,0) Unhealthy(integer,0) Driver(string,1) Heartbeat(date,1) Age(date,0)"; got != want {
		t.Errorf("columns:\n got %s\nwant %s", got, want)
	}
	if r := rows["dgx-h100-0"]; columns(table, r, true)[4] != "dgx-mixed" || !strings.HasPrefix(columns(table, r, true)[7], "5") {
		t.Errorf("dgx wide row %q, want config dgx-mixed and a driver version", columns(table, r, true))
	}
	now := time.Now()
	t.Logf("$ kubectl get gpunodes\n%s", render(table, false, now))
	t.Logf("$ kubectl get gpunodes -o wide\n%s", render(table, true, now))
}

// cell is a table cell as kubectl prints it: dates as ages.
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case float64:
		return fmt.Sprint(int64(v))
	default:
		return fmt.Sprint(v)
	}
}

// columns are the cells kubectl shows: priority 0, or all with -o wide.
func columns(t metav1.Table, row []string, wide bool) []string {
	var out []string
	for i, c := range t.ColumnDefinitions {
		if i < len(row) && (wide || c.Priority == 0) {
			out = append(out, row[i])
		}
	}
	return out
}

// render prints the table as kubectl does: upper-case headers, dates as ages.
func render(t metav1.Table, wide bool, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	var head []string
	for _, c := range t.ColumnDefinitions {
		if wide || c.Priority == 0 {
			head = append(head, strings.ToUpper(c.Name))
		}
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, r := range t.Rows {
		var cells []string
		for i, c := range t.ColumnDefinitions {
			if !wide && c.Priority != 0 {
				continue
			}
			v := cell(r.Cells[i])
			if c.Type == "date" && v != "" {
				if ts, err := time.Parse(time.RFC3339, v); err == nil {
					v = duration.HumanDuration(now.Sub(ts))
				}
			}
			if v == "" {
				v = "<none>"
			}
			cells = append(cells, v)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	_ = w.Flush()
	return b.String()
}
