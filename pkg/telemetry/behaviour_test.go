package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

// blockingSource is a Source whose Sample blocks while blocked is open.
type blockingSource struct {
	Source
	started chan struct{} // receives when a blocked Sample starts
	release chan struct{} // closing it ends blocked Samples
	block   func() bool   // whether the next Sample blocks
}

func (s *blockingSource) Sample(ctx context.Context) (*gpu.Snapshot, error) {
	if s.block() {
		s.started <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Source.Sample(ctx)
}

// waitForWaiters polls until the fake clock has a timer or ticker waiting.
func waitForWaiters(t *testing.T, n *simNode) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return n.clock.HasWaiters(), nil })
	if err != nil {
		t.Fatalf("nothing waits on the clock: %v", err)
	}
}

func TestHungBackendDoesNotBlockScrapes(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	var blocking atomic.Bool
	src := &blockingSource{Source: n.backend, started: make(chan struct{}, 1), release: make(chan struct{}),
		block: blocking.Load}
	e, err := New(Options{Backend: src, Clock: n.clock, NodeName: "n", Interval: 10 * time.Second, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.Refresh(ctx)
	h := e.Handler()
	first := scrape(t, h)
	if len(seriesOf(first, "DCGM_FI_DEV_GPU_TEMP")) != 8 {
		t.Fatalf("first pass: want 8 temperature series")
	}

	// The backend hangs: Refresh must give up after Timeout and scrapes go
	// on meanwhile with the previous snapshot.
	blocking.Store(true)
	n.clock.Step(10 * time.Second)
	done := make(chan struct{})
	go func() { e.Refresh(ctx); close(done) }()
	<-src.started
	if got := scrape(t, h); got != first {
		t.Error("a scrape during a hung pass did not serve the previous snapshot")
	}
	waitForWaiters(t, n)
	n.clock.Step(2 * time.Second)
	<-done
	body := scrape(t, h)
	if !strings.Contains(body, `tessera_collector_success{collector="sample"} 0`) {
		t.Error("hung sample not reported as failed")
	}
	if len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 8 {
		t.Error("within MaxSampleAge the last sample must keep being served")
	}

	// Past MaxSampleAge (30s) readings go; the GPUs are reported down. The
	// hung call is still the one waited for: no second Sample starts.
	n.clock.Step(30 * time.Second)
	done = make(chan struct{})
	go func() { e.Refresh(ctx); close(done) }()
	waitForWaiters(t, n)
	n.clock.Step(2 * time.Second)
	<-done
	select {
	case <-src.started:
		t.Fatal("a second Sample started while the first still hangs")
	default:
	}
	body = scrape(t, h)
	if s := seriesOf(body, "DCGM_FI_DEV_GPU_TEMP"); len(s) != 0 {
		t.Errorf("stale readings served past MaxSampleAge: %s", s[0])
	}
	if up := seriesOf(body, "tessera_gpu_telemetry_up"); len(up) != 8 || !strings.HasSuffix(up[0], " 0") {
		t.Errorf("want 8 tessera_gpu_telemetry_up series at 0, got %v", up)
	}

	// The backend answers again: the pass collects the pending result.
	blocking.Store(false)
	close(src.release)
	e.Refresh(ctx)
	body = scrape(t, h)
	if !strings.Contains(body, `tessera_collector_success{collector="sample"} 1`) || len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 8 {
		t.Error("did not recover after the backend answered")
	}
}

// stuckCollector never returns before its context ends.
type stuckCollector struct{ entered chan struct{} }

func (stuckCollector) Name() string { return "stuck" }

func (c stuckCollector) Update(ctx context.Context, _ *pass, b *builder) error {
	b.gauge(&gpuTempDesc, nil, 1) // output of a collector that times out is discarded
	c.entered <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// failingCollector fails after producing one series.
type failingCollector struct{}

func (failingCollector) Name() string { return "failing" }

func (failingCollector) Update(_ context.Context, _ *pass, b *builder) error {
	b.gauge(&snapshotTimestampDesc, labels{label("from", "failing")}, 1)
	return errors.New("boom")
}

func TestSlowOrFailingCollector(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	e := newTestExporter(t, n, Options{Timeout: time.Second})
	stuck := stuckCollector{entered: make(chan struct{}, 1)}
	e.collectors = append(e.collectors, stuck, failingCollector{})
	recorded := make(chan string, len(e.collectors))
	e.collectorDone = func(name string) { recorded <- name }
	done := make(chan struct{})
	go func() { e.Refresh(context.Background()); close(done) }()
	<-stuck.entered
	// Step past the deadline only once every other collector is recorded.
	for range len(e.collectors) - 1 {
		<-recorded
	}
	waitForWaiters(t, n)
	n.clock.Step(time.Second)
	<-done
	body := scrape(t, e.Handler())
	for _, want := range []string{
		`tessera_collector_success{collector="stuck"} 0`,
		`tessera_collector_success{collector="failing"} 0`,
		`tessera_collector_success{collector="temperature"} 1`,
		`tessera_collector_duration_seconds{collector="stuck"} 1`,
		`tessera_telemetry_snapshot_timestamp_seconds{from="failing"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if got := len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")); got != 4 {
		t.Errorf("DCGM_FI_DEV_GPU_TEMP has %d series, want the 4 GPUs' (the stuck collector's output is discarded)", got)
	}
}

func TestFatalXIDRecordsNodeEvent(t *testing.T) {
	s := newDGXScenario(t)
	var events []string
	for len(s.recorder.Events) > 0 {
		events = append(events, <-s.recorder.Events)
	}
	want := "Warning GPUFatalXID GPU 7 (" + s.machine.Devices[7].UUID + ") reported fatal XID 79 (gpu has fallen off the bus)"
	if len(events) != 1 || events[0] != want {
		t.Errorf("node events = %q, want only %q (XID 13 and 31 are not fatal)", events, want)
	}
	if got, want := s.exporter.opts.Node.Kind+"/"+s.exporter.opts.Node.Name, "Node/dgx-01"; got != want {
		t.Errorf("events recorded on %s, want %s", got, want)
	}
}

func TestTeeEventsFeedsExporterAndWatcher(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	e := newTestExporter(t, n, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan gpu.Event, 4)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- gpu.TeeEvents(n.backend, e.ObserveEvent).WatchEvents(ctx, func(ev gpu.Event) { got <- ev })
	}()
	// Inject only once the watcher has registered for events on every GPU.
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return n.sim.Calls("RegisterEvents") >= n.sim.NumGPUs(), nil
	})
	if err != nil {
		t.Fatalf("watcher did not register for events: %v", err)
	}
	if err := n.sim.InjectXID(2, 48); err != nil {
		t.Fatal(err)
	}
	ev := <-got
	if ev.Kind != gpu.EventXID || ev.XID != 48 || ev.Index != 2 {
		t.Fatalf("watcher got %+v, want XID 48 on gpu 2", ev)
	}
	// The observer ran before the watcher's handler.
	e.Refresh(ctx)
	body := scrape(t, e.Handler())
	want := `xid="48",description="double bit ecc error",fatal="true"} 1`
	if s := seriesOf(body, "tessera_gpu_xid_errors_total"); len(s) != 1 || !strings.HasSuffix(s[0], want) || !strings.Contains(s[0], `gpu="2"`) {
		t.Errorf("tessera_gpu_xid_errors_total = %v, want one series on gpu 2 ending %s", s, want)
	}
	cancel()
	if err := <-watchErr; err != nil {
		t.Errorf("WatchEvents after cancel: %v", err)
	}
}

func TestHandlerGzipAndExtras(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	e := newTestExporter(t, n, Options{})
	e.Refresh(context.Background())
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_things_total", Help: "Things."})
	c.Add(3)
	// A family the snapshot already has is left out of the extras.
	dup := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tessera_telemetry_snapshot_timestamp_seconds", Help: "dup"})
	reg.MustRegister(c, dup)
	h := e.Handler(reg)

	plain := scrape(t, h)
	if !strings.Contains(plain, "\nagent_things_total 3\n") {
		t.Error("extra gatherer's metric missing")
	}
	if strings.Count(plain, "# TYPE tessera_telemetry_snapshot_timestamp_seconds ") != 1 {
		t.Error("a family both in the snapshot and the extras is served twice")
	}

	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false) // the whole body must be one gzip member
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(unzipped) != plain {
		t.Error("gzipped scrape differs from the plain one")
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := map[string]bool{
		"":                             false,
		"gzip":                         true,
		"deflate, gzip;q=1.0, *;q=0.5": true,
		"identity":                     false,
		"gzip;q=0":                     false,
		"br, GZIP":                     true,
	}
	for header, want := range tests {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestDCGMBusID(t *testing.T) {
	tests := map[string]string{
		"0000:1b:00.0":     "00000000:1B:00.0",
		"00000000:db:00.0": "00000000:DB:00.0",
		"garbage":          "GARBAGE",
	}
	for in, want := range tests {
		if got := dcgmBusID(in); got != want {
			t.Errorf("dcgmBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunCollectsOnInterval(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	e := newTestExporter(t, n, Options{Interval: 15 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	waitSnapshot := func(want time.Time) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return e.snap.Load().time.Equal(want), nil
		})
		if err != nil {
			t.Fatalf("no snapshot taken at %s: %v", want, err)
		}
	}
	waitSnapshot(epoch)
	waitForWaiters(t, n)
	n.clock.Step(15 * time.Second)
	waitSnapshot(epoch.Add(15 * time.Second))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestSetMachineAfterMIGChange(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	e := newTestExporter(t, n, Options{})
	e.Refresh(context.Background())
	if s := seriesOf(scrape(t, e.Handler()), "tessera_mig_device_info"); len(s) != 0 {
		t.Fatalf("MIG devices before any were made: %v", s)
	}
	gputest.FillMIG(t, n.backend, 6, "3g.40gb", "3g.40gb")
	e.SetMachine(n.discover(t))
	e.Refresh(context.Background())
	body := scrape(t, e.Handler())
	if s := seriesOf(body, "tessera_mig_device_info"); len(s) != 2 {
		t.Errorf("tessera_mig_device_info has %d series after SetMachine, want 2", len(s))
	}
	if !strings.Contains(body, `tessera_gpu_mig_devices{gpu="6",`) {
		t.Error("MIG layout of gpu 6 missing")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	tests := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{name: "no backend", o: Options{NodeName: "n"}, wantErr: "Backend is required"},
		{name: "negative interval", o: Options{Backend: n.backend, NodeName: "n", Interval: -time.Second}, wantErr: "interval -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	e, err := New(Options{Backend: n.backend, NodeName: "n", Interval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.Timeout != 2*time.Second || e.opts.MaxSampleAge != 6*time.Second || e.opts.PodsMaxAge != 6*time.Second {
		t.Errorf("defaults: timeout %s, max sample age %s, pods max age %s", e.opts.Timeout, e.opts.MaxSampleAge, e.opts.PodsMaxAge)
	}
}

// TestKubeletPodResources attributes series through the real podresources
// cache reading the kubelet's own PodResources server, then loses the
// kubelet.
func TestKubeletPodResources(t *testing.T) {
	n := newSimNode(t, "dgx-h100")
	gputest.FillMIG(t, n.backend, 1, "1g.10gb", "1g.10gb")
	m := n.discover(t)
	srv := podresourcestest.Start(t,
		podresourcestest.Pod{Namespace: "ml", Name: "train-0", Containers: []podresourcestest.Container{{Name: "trainer",
			Devices: []podresourcestest.Device{{Resource: "nvidia.com/gpu", IDs: []string{m.Devices[0].UUID}}}}}},
		podresourcestest.Pod{Namespace: "web", Name: "infer-0", Containers: []podresourcestest.Container{{Name: "server",
			Devices: []podresourcestest.Device{{Resource: "nvidia.com/mig-1g.10gb", IDs: []string{m.Devices[1].MIGDevices[1].UUID}}}}}},
		podresourcestest.Pod{Namespace: "web", Name: "infer-1", Containers: []podresourcestest.Container{{Name: "server",
			Devices: []podresourcestest.Device{{Resource: "nvidia.com/gpu.shared", IDs: []string{m.Devices[2].UUID + "::3"}}}}}},
	)
	cache := podresources.New(podresources.Options{Socket: srv.Socket(), Clock: n.clock})
	ctx := context.Background()
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	e := newTestExporter(t, n, Options{Machine: m, Pods: cache})
	e.Refresh(ctx)
	body := scrape(t, e.Handler())
	for _, want := range []string{
		`DCGM_FI_DEV_GPU_TEMP{gpu="0",` + `UUID="` + m.Devices[0].UUID,
		`container="trainer",namespace="ml",pod="train-0"}`,
		`GPU_I_ID="` + strconv.Itoa(m.Devices[1].MIGDevices[1].GPUInstanceID) + `",Hostname="node-1",hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15",container="server",namespace="web",pod="infer-0"}`,
		`device="nvidia2",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15",container="server",namespace="web",pod="infer-1"}`,
		`tessera_pod_gpu_devices{namespace="web",pod="infer-1",container="server",resource="nvidia.com/gpu.shared"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}

	// The kubelet goes away for longer than PodsMaxAge (30s).
	srv.Stop()
	n.clock.Step(31 * time.Second)
	if err := cache.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded without a kubelet")
	}
	e.Refresh(ctx)
	body = scrape(t, e.Handler())
	if strings.Contains(body, `pod="`) {
		t.Error("series keep pod labels from a view older than PodsMaxAge")
	}
	up := seriesOf(body, "tessera_telemetry_pod_labels_up")
	if len(up) != 1 || !strings.HasSuffix(up[0], " 0") || !strings.Contains(up[0], `reason="socket_not_found"`) {
		t.Errorf("tessera_telemetry_pod_labels_up = %v, want 0 with the missing socket as reason", up)
	}
	if len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 8 {
		t.Error("metrics must keep flowing without the kubelet")
	}
}

func TestScrapeCallsNeitherBackendNorKubelet(t *testing.T) {
	s := newDGXScenario(t)
	pods, nvml := s.pods.calls, s.node.sim.Calls("GetTemperature")
	if pods == 0 || nvml == 0 {
		t.Fatalf("collection made no calls (pods %d, GetTemperature %d); the test cannot tell scrapes from passes", pods, nvml)
	}
	h := s.exporter.Handler()
	for range 5 {
		scrape(t, h)
	}
	if s.pods.calls != pods || s.node.sim.Calls("GetTemperature") != nvml {
		t.Errorf("scrapes called the pod view %d times and NVML GetTemperature %d times; want none",
			s.pods.calls-pods, s.node.sim.Calls("GetTemperature")-nvml)
	}
}

// failingDiscovery fails Discover until fail is cleared.
type failingDiscovery struct {
	Source
	fail bool
}

func (f *failingDiscovery) Discover(ctx context.Context) (*gpu.Machine, error) {
	if f.fail {
		return nil, errors.New("nvml: driver not loaded")
	}
	return f.Source.Discover(ctx)
}

func TestDiscoveryRetriedEachPass(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	src := &failingDiscovery{Source: n.backend, fail: true}
	e, err := New(Options{Backend: src, Clock: n.clock, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	e.Refresh(context.Background())
	body := scrape(t, e.Handler())
	if !strings.Contains(body, `tessera_collector_success{collector="discover"} 0`+"\n") || len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 0 {
		t.Error("failed discovery: want discover success 0 and no GPU series")
	}
	src.fail = false
	e.Refresh(context.Background())
	body = scrape(t, e.Handler())
	if !strings.Contains(body, `tessera_collector_success{collector="discover"} 1`+"\n") || len(seriesOf(body, "DCGM_FI_DEV_GPU_TEMP")) != 4 {
		t.Error("discovery that works again: want discover success 1 and 4 GPU temperature series")
	}
	e.Refresh(context.Background())
	if strings.Contains(scrape(t, e.Handler()), `collector="discover"`) {
		t.Error("discovery must run only until it succeeds")
	}
}
