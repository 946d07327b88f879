package telemetry

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// refreshTwice runs two passes 10s apart, so that GPM readings exist.
func refreshTwice(e *Exporter, n *simNode) {
	e.Refresh(context.Background())
	n.clock.Step(10 * time.Second)
	e.Refresh(context.Background())
}

func newTestExporter(t testing.TB, n *simNode, o Options) *Exporter {
	t.Helper()
	o.Backend = n.backend
	o.Clock = n.clock
	if o.NodeName == "" {
		o.NodeName = "node-1"
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAbsentReadingsHaveNoSeries(t *testing.T) {
	prof := []string{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
		"DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES"}
	ecc := []string{"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
		"DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"}
	tests := []struct {
		name    string
		machine string
		faults  []sim.Fault
		absent  []string
		present []string
		// perGPU lists families that must have a series for every GPU but
		// those in without.
		perGPU  []string
		without []string
	}{
		{
			name: "L40S has no GPM, NVLink or MIG", machine: "pcie-4xl40s",
			absent:  append([]string{"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "tessera_gpu_mig_enabled"}, prof...),
			present: []string{"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"},
		},
		{
			name: "RTX 4090 has no GPM and no ECC", machine: "ws-2xrtx4090",
			absent:  append(append([]string{}, prof...), ecc...),
			present: []string{"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK"},
		},
		{
			name: "A100 has no GPM", machine: "dgx-a100",
			absent:  prof,
			present: []string{"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"},
		},
		{
			name: "one H100 without a temperature sensor", machine: "dgx-h100",
			faults:  []sim.Fault{{GPU: 2, Call: "GetTemperature", Return: nvml.ERROR_NOT_SUPPORTED}},
			present: prof,
			perGPU:  []string{"DCGM_FI_DEV_GPU_TEMP"}, without: []string{"2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newSimNode(t, tt.machine)
			for _, f := range tt.faults {
				n.sim.InjectFault(f)
			}
			e := newTestExporter(t, n, Options{})
			refreshTwice(e, n)
			body := scrape(t, e.Handler())
			for _, name := range tt.absent {
				if s := seriesOf(body, name); len(s) > 0 {
					t.Errorf("%s has %d series, want none: %s", name, len(s), s[0])
				}
				if strings.Contains(body, "# TYPE "+name+" ") {
					t.Errorf("%s has a TYPE line but should be absent", name)
				}
			}
			for _, name := range tt.present {
				if len(seriesOf(body, name)) == 0 {
					t.Errorf("%s has no series, want some", name)
				}
			}
			for _, name := range tt.perGPU {
				for i := range n.sim.NumGPUs() {
					gpuLabel := `gpu="` + strconv.Itoa(i) + `"`
					has := false
					for _, s := range seriesOf(body, name) {
						has = has || strings.Contains(s, "{"+gpuLabel+",")
					}
					want := !slices.Contains(tt.without, strconv.Itoa(i))
					if has != want {
						t.Errorf("%s{%s} present = %v, want %v", name, gpuLabel, has, want)
					}
				}
			}
		})
	}
}

func TestFailingGPUDoesNotStopOthers(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	e := newTestExporter(t, n, Options{})
	if err := n.sim.LoseGPU(3); err != nil {
		t.Fatal(err)
	}
	refreshTwice(e, n)
	body := scrape(t, e.Handler())
	temps := seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")
	if len(temps) != 7 {
		t.Errorf("DCGM_FI_DEV_GPU_TEMP has %d series, want 7 (every GPU but the lost one):\n%s", len(temps), strings.Join(temps, "\n"))
	}
	for _, s := range temps {
		if strings.Contains(s, `gpu="3"`) {
			t.Errorf("lost GPU 3 has a temperature series: %s", s)
		}
	}
	for _, s := range seriesOf(body, "tessera_gpu_telemetry_up") {
		want := " 1"
		if strings.Contains(s, `gpu="3"`) {
			want = " 0"
		}
		if !strings.HasSuffix(s, want) {
			t.Errorf("%s: want value%s", s, want)
		}
	}
	if !strings.Contains(body, "tessera_collector_success{collector=\"sample\"} 1\n") {
		t.Error("the sample stage failed as a whole; one lost GPU must not fail it")
	}
}

func TestPodResourcesStatus(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	m := n.discover(t)
	holders := []podresources.Holder{holder("ml", "train-0", "trainer", "nvidia.com/gpu", m.Devices[0].UUID)}
	tests := []struct {
		name       string
		status     podresources.Status
		wantLabels bool
		wantUp     string
	}{
		{
			name:       "current view",
			status:     podresources.Status{OK: true, Updated: epoch},
			wantLabels: true, wantUp: `tessera_telemetry_pod_labels_up{reason=""} 1`,
		},
		{
			name:   "kubelet socket missing from the start",
			status: podresources.Status{Reason: "kubelet socket /var/lib/kubelet/pod-resources/kubelet.sock not found", Class: podresources.ReasonSocketNotFound},
			wantUp: `tessera_telemetry_pod_labels_up{reason="socket_not_found"} 0`,
		},
		{
			name:       "failing for less than PodsMaxAge keeps the last view",
			status:     podresources.Status{Reason: "list pod resources: unavailable", Class: podresources.ReasonUnavailable, Updated: epoch.Add(-20 * time.Second)},
			wantLabels: true, wantUp: `tessera_telemetry_pod_labels_up{reason="unavailable"} 1`,
		},
		{
			name:   "failing for longer than PodsMaxAge drops pod labels",
			status: podresources.Status{Reason: "list pod resources: unavailable", Class: podresources.ReasonUnavailable, Updated: epoch.Add(-31 * time.Second)},
			wantUp: `tessera_telemetry_pod_labels_up{reason="unavailable"} 0`,
		},
		{
			name:   "before the first refresh",
			status: podresources.Status{Reason: "not refreshed yet"},
			wantUp: `tessera_telemetry_pod_labels_up{reason="not_refreshed_yet"} 0`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pods := &fakePods{holders: holders, status: tt.status}
			e := newTestExporter(t, n, Options{Machine: m, Pods: pods, PodsMaxAge: 30 * time.Second})
			e.Refresh(context.Background())
			body := scrape(t, e.Handler())
			if got := strings.Join(seriesOf(body, "tessera_telemetry_pod_labels_up"), "\n"); got != tt.wantUp {
				t.Errorf("status metric:\n got %s\nwant %s", got, tt.wantUp)
			}
			labelled := strings.Contains(body, `pod="train-0"`)
			if labelled != tt.wantLabels {
				t.Errorf("series carry pod labels = %v, want %v", labelled, tt.wantLabels)
			}
			if len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 8 {
				t.Errorf("want 8 GPU temperature series whatever the pod view")
			}
			if got := len(seriesOf(body, "tessera_pod_gpu_devices")); (got > 0) != tt.wantLabels {
				t.Errorf("tessera_pod_gpu_devices has %d series, want some = %v", got, tt.wantLabels)
			}
		})
	}
	t.Run("no pod view configured", func(t *testing.T) {
		e := newTestExporter(t, n, Options{Machine: m})
		e.Refresh(context.Background())
		body := scrape(t, e.Handler())
		want := `tessera_telemetry_pod_labels_up{reason="not_configured"} 0`
		if got := strings.Join(seriesOf(body, "tessera_telemetry_pod_labels_up"), "\n"); got != want {
			t.Errorf("status metric:\n got %s\nwant %s", got, want)
		}
	})
}
