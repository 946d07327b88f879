package telemetry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// benchNode is the benchmark workload: a simulated DGX H100 with 7 MIG
// devices on each of its 8 GPUs, every MIG device loaded, and 100 pods: one
// per MIG device plus 44 more holding time-sliced replicas of the first 44.
func benchNode(b *testing.B) (*simNode, *gpu.Machine, *fakePods) {
	b.Helper()
	n := newSimNode(b, "dgx-h100")
	for i := range 8 {
		gputest.FillMIG(b, n.backend, i, slices.Repeat([]string{"1g.10gb"}, 7)...)
	}
	m := n.discover(b)
	pods := &fakePods{status: podresources.Status{OK: true, Updated: epoch}}
	var migs []gpu.MIGDevice
	for _, d := range m.Devices {
		migs = append(migs, d.MIGDevices...)
	}
	for i, md := range migs {
		n.setMIGLoad(b, md.Parent, md.GPUInstanceID, sim.Load{SMActive: 0.5, TensorActive: 0.3, DRAMActive: 0.2,
			Processes: []sim.Process{{PID: uint32(1000 + i), UsedMemoryMiB: 4000, ComputeInstanceID: -1}}})
		pods.holders = append(pods.holders, holder("ns-"+fmt.Sprint(i%5), fmt.Sprintf("pod-%03d", i), "main", "nvidia.com/mig-1g.10gb", md.UUID+"::0"))
	}
	for i := range 100 - len(migs) {
		pods.holders = append(pods.holders, holder("shared", fmt.Sprintf("pod-%03d", len(migs)+i), "main", "nvidia.com/mig-1g.10gb", migs[i].UUID+"::1"))
	}
	return n, m, pods
}

// benchExporter returns an exporter over benchNode after two passes, and
// the agent registry (Go and process collectors) that /metrics appends.
func benchExporter(b *testing.B) (*Exporter, *prometheus.Registry, *simNode) {
	b.Helper()
	n, m, pods := benchNode(b)
	e := newTestExporter(b, n, Options{Machine: m, Pods: pods})
	refreshTwice(e, n)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return e, reg, n
}

func benchmarkHandler(b *testing.B, h http.Handler, acceptEncoding string) {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		bytes = rec.Body.Len()
	}
	b.ReportMetric(float64(bytes), "bytes/scrape")
}

// BenchmarkScrape serves the pre-encoded snapshot plus the agent registry.
func BenchmarkScrape(b *testing.B) {
	e, reg, _ := benchExporter(b)
	b.Run("text", func(b *testing.B) { benchmarkHandler(b, e.Handler(reg), "") })
	b.Run("gzip", func(b *testing.B) { benchmarkHandler(b, e.Handler(reg), "gzip") })
	b.Run("snapshot-only", func(b *testing.B) { benchmarkHandler(b, e.Handler(), "") })
}

// benchGathererExporter is benchExporter with its snapshot's families,
// parsed once, for the alternative design's Gatherer.
func benchGathererExporter(b *testing.B) (*Exporter, *prometheus.Registry, []*dto.MetricFamily) {
	b.Helper()
	e, reg, _ := benchExporter(b)
	fams, err := snapshotFamilies(e.snap.Load())
	if err != nil {
		b.Fatal(err)
	}
	return e, reg, fams
}

// BenchmarkScrapeGatherer is the alternative design: the same families
// served through client_golang's promhttp, encoded on every scrape.
func BenchmarkScrapeGatherer(b *testing.B) {
	_, reg, fams := benchGathererExporter(b)
	g := prometheus.Gatherers{prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return fams, nil
	}), reg}
	b.Run("text", func(b *testing.B) {
		benchmarkHandler(b, promhttp.HandlerFor(g, promhttp.HandlerOpts{DisableCompression: true}), "")
	})
	b.Run("gzip", func(b *testing.B) { benchmarkHandler(b, promhttp.HandlerFor(g, promhttp.HandlerOpts{}), "gzip") })
}

// BenchmarkScrapeLatency measures /metrics over loopback HTTP as Prometheus
// sees it: 2000 sequential gzip scrapes, reporting p50 and p99. Run with
// -benchtime=1x.
func BenchmarkScrapeLatency(b *testing.B) {
	e, reg, fams := benchGathererExporter(b)
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"snapshot", e.Handler(reg)},
		{"promhttp", promhttp.HandlerFor(prometheus.Gatherers{prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			return fams, nil
		}), reg}, promhttp.HandlerOpts{})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			for b.Loop() {
				p50, p99, size := scrapeLatency(b, srv.URL, 2000)
				b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(size), "wire-bytes/scrape")
			}
		})
	}
}

// scrapeLatency GETs url n times (gzip, as Prometheus asks) and returns the
// median and 99th percentile latency and the compressed size.
func scrapeLatency(b *testing.B, url string, n int) (p50, p99 time.Duration, size int64) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	lat := make([]time.Duration, 0, n)
	for range n {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		size, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[n/2], lat[n*99/100], size
}

// BenchmarkRefresh is one collection pass: the backend sample of 8 GPUs and
// 56 MIG devices (the simulated NVML), attribution, collectors, encoding.
func BenchmarkRefresh(b *testing.B) {
	e, _, n := benchExporter(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n.clock.Step(10 * time.Second)
		e.Refresh(ctx)
	}
	b.ReportMetric(float64(len(e.snap.Load().text)), "snapshot-bytes")
}

// cachedSource returns one fixed sample, to time a pass without the backend.
type cachedSource struct {
	m *gpu.Machine
	s *gpu.Snapshot
}

func (c cachedSource) Discover(context.Context) (*gpu.Machine, error) { return c.m, nil }
func (c cachedSource) Sample(context.Context) (*gpu.Snapshot, error)  { return c.s, nil }

// BenchmarkRefreshWithoutBackend is a pass over a fixed sample: the
// exporter's own cost (attribution, collectors, encoding once, gzip).
func BenchmarkRefreshWithoutBackend(b *testing.B) {
	n, m, pods := benchNode(b)
	ctx := context.Background()
	if _, err := n.backend.Sample(ctx); err != nil {
		b.Fatal(err)
	}
	n.clock.Step(10 * time.Second)
	s, err := n.backend.Sample(ctx)
	if err != nil {
		b.Fatal(err)
	}
	e, err := New(Options{Backend: cachedSource{m: m, s: s}, Machine: m, Pods: pods, Clock: n.clock, NodeName: "n"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Refresh(ctx)
	}
	snap := e.snap.Load()
	series := 0
	fams, err := snapshotFamilies(snap)
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range fams {
		series += len(f.GetMetric())
	}
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(len(snap.text)), "text-bytes")
	b.ReportMetric(float64(len(snap.gz)), "gzip-bytes")
}
