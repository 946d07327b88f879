package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/telemetry"
)

// exporterField compares one dcgm-exporter metric of Tessera's /metrics with
// an nvidia-smi field.
type exporterField struct {
	metric, smi string
	tol         func(smi float64) float64
}

var exporterFields = []exporterField{
	{"DCGM_FI_DEV_GPU_TEMP", "temperature.gpu", func(float64) float64 { return 3 }},
	{"DCGM_FI_DEV_POWER_USAGE", "power.draw", func(p float64) float64 { return math.Max(15, 0.1*p) }},
	{"DCGM_FI_DEV_FB_USED", "memory.used", func(float64) float64 { return 64 }},
	{"DCGM_FI_DEV_FB_FREE", "memory.free", func(float64) float64 { return 64 }},
	{"DCGM_FI_DEV_SM_CLOCK", "clocks.sm", func(float64) float64 { return 200 }},
	{"DCGM_FI_DEV_MEM_CLOCK", "clocks.mem", func(float64) float64 { return 200 }},
	{"DCGM_FI_DEV_GPU_UTIL", "utilization.gpu", func(float64) float64 { return 10 }},
	{"DCGM_FI_DEV_MEM_COPY_UTIL", "utilization.memory", func(float64) float64 { return 10 }},
}

// compareExporter runs Tessera's exporter on the real backend (two
// collection passes, interval apart, as GPM rates need), scrapes its
// /metrics once and compares each whole-GPU series with nvidia-smi.
func compareExporter(ctx context.Context, b telemetry.Source, m *gpu.Machine, rows []map[string]string, interval time.Duration, tw *tabwriter.Writer, check func(int, string, string, string, string, bool)) error {
	exp, err := telemetry.New(telemetry.Options{Backend: b, Machine: m, NodeName: "gpu-smoke"})
	if err != nil {
		return fmt.Errorf("creating the exporter: %w", err)
	}
	exp.Refresh(ctx)
	time.Sleep(interval) // this is a tool, not a test
	exp.Refresh(ctx)
	rec := httptest.NewRecorder()
	exp.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return fmt.Errorf("scraping the exporter: %d %s", rec.Code, rec.Body.String())
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		return fmt.Errorf("parsing the exporter's /metrics: %w", err)
	}
	for _, row := range rows {
		idx, _ := strconv.Atoi(row["index"])
		gpuLabel := strconv.Itoa(idx)
		// Identity labels, from the GPU temperature series.
		if s := series(families["DCGM_FI_DEV_GPU_TEMP"], gpuLabel); s != nil {
			check(idx, "label UUID", labelOf(s, "UUID"), row["uuid"], "exact", labelOf(s, "UUID") == row["uuid"])
			check(idx, "label modelName", labelOf(s, "modelName"), row["name"], "exact", labelOf(s, "modelName") == row["name"])
			check(idx, "label pci_bus_id", labelOf(s, "pci_bus_id"), row["pci.bus_id"], "same bus",
				strings.EqualFold(labelOf(s, "pci_bus_id"), row["pci.bus_id"]))
		}
		for _, f := range exporterFields {
			smi := row[f.smi]
			s := series(families[f.metric], gpuLabel)
			if s == nil {
				// Absent is right only where nvidia-smi has no value either (MIG mode, unsupported).
				check(idx, f.metric, "absent", smi, "absent only if [N/A]", strings.Contains(smi, "N/A"))
				continue
			}
			v := s.GetGauge().GetValue()
			if s.GetCounter() != nil {
				v = s.GetCounter().GetValue()
			}
			want := num(smi)
			tol := f.tol(want)
			check(idx, f.metric, strconv.FormatFloat(v, 'f', -1, 64), smi, fmt.Sprintf("±%g", tol), within(v, want, tol))
		}
	}
	if fam := families["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]; fam != nil {
		fmt.Fprintf(tw, "-\tDCGM_FI_PROF_* (info)\t%d tensor-active series\t-\t-\t-\n", len(fam.GetMetric()))
	}
	return nil
}

// series is the whole-GPU series of gpu in fam (no GPU_I_ID label), or nil.
func series(fam *dto.MetricFamily, gpuLabel string) *dto.Metric {
	if fam == nil {
		return nil
	}
	for _, m := range fam.GetMetric() {
		if labelOf(m, "gpu") == gpuLabel && labelOf(m, "GPU_I_ID") == "" {
			return m
		}
	}
	return nil
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
