package telemetry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	testclock "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// simNode is a simulated machine behind the real NVML backend, on a fake clock.
type simNode struct {
	sim     *sim.Machine
	backend *nvmlbackend.Backend
	clock   *testclock.FakeClock
}

// newSimNode opens built-in machine name as backend.Open("sim:<name>")
// does, but on a fake clock so that energy and GPM readings are
// deterministic.
func newSimNode(t testing.TB, name string) *simNode {
	t.Helper()
	clk := testclock.NewFakeClock(epoch)
	m, err := sim.Open(name, sim.WithClock(clk))
	if err != nil {
		t.Fatalf("opening simulated machine %s: %v", name, err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:"+name), nvmlbackend.WithClock(clk))
	if err != nil {
		t.Fatalf("opening nvml backend over %s: %v", name, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &simNode{sim: m, backend: b, clock: clk}
}

func (n *simNode) discover(t testing.TB) *gpu.Machine {
	t.Helper()
	m, err := n.backend.Discover(context.Background())
	if err != nil {
		t.Fatalf("discovering: %v", err)
	}
	return m
}

func (n *simNode) setLoad(t testing.TB, index int, l sim.Load) {
	t.Helper()
	if err := n.sim.SetLoad(index, l); err != nil {
		t.Fatal(err)
	}
}

func (n *simNode) setMIGLoad(t testing.TB, index, gi int, l sim.Load) {
	t.Helper()
	if err := n.sim.SetMIGLoad(index, gi, l); err != nil {
		t.Fatal(err)
	}
}

// fakePods is a PodLookup over a fixed list of holders, with the lookup
// semantics of podresources.Cache: exact ID or "ID::n" replicas.
type fakePods struct {
	holders []podresources.Holder
	status  podresources.Status
	calls   int
}

func (f *fakePods) Holders(id string) []podresources.Holder {
	f.calls++
	var out []podresources.Holder
	for _, h := range f.holders {
		if h.DeviceID == id || strings.HasPrefix(h.DeviceID, id+podresources.ReplicaSeparator) {
			out = append(out, h)
		}
	}
	return out
}

func (f *fakePods) Status() podresources.Status { return f.status }

func holder(ns, pod, ctr, resource, id string) podresources.Holder {
	return podresources.Holder{Namespace: ns, Pod: pod, Container: ctr, Resource: resource, DeviceID: id}
}

// scrape GETs /metrics from h (without gzip) and returns the body.
func scrape(t testing.TB, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", rec.Code)
	}
	body, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// seriesOf returns the sample lines of family name.
func seriesOf(body, name string) []string {
	var out []string
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			out = append(out, strings.TrimRight(line, "\n"))
		}
	}
	return out
}

// snapshotFamilies parses s's text back into metric families, sorted by
// name (the snapshot keeps only the text).
func snapshotFamilies(s *snapshot) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(bytes.NewReader(s.text))
	if err != nil {
		return nil, fmt.Errorf("parsing the snapshot's text: %w", err)
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// podDirectory is a fixed procmap.PodDirectory: pods by UID, each with one
// container whose runtime ID derives from the pod and container names.
type podDirectory map[string]procmap.PodInfo

func (d podDirectory) Pod(uid string) (procmap.PodInfo, bool) { p, ok := d[uid]; return p, ok }

func podUID(pod string) string {
	h := fmt.Sprintf("%032x", sha256.Sum256([]byte(pod)))[:32]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func containerRuntimeID(pod, container string) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(pod+"/"+container)))
}

// add registers namespace/pod with container.
func (d podDirectory) add(namespace, pod, container string) {
	d[podUID(pod)] = procmap.PodInfo{Namespace: namespace, Name: pod,
		Containers: map[string]string{containerRuntimeID(pod, container): container}}
}

// cgroup is the cgroup v2 path (systemd driver, containerd) of the container.
func (d podDirectory) cgroup(pod, container string) string {
	return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(podUID(pod), "-", "_") +
		".slice/cri-containerd-" + containerRuntimeID(pod, container) + ".scope"
}

// scenarioPods are the pods of the DGX scenario whose processes run on its GPUs.
var scenarioPods = func() podDirectory {
	d := podDirectory{}
	d.add("ml", "train-0", "trainer")
	d.add("team-a", "infer-a", "server")
	d.add("team-b", "infer-b", "server")
	d.add("ml", "train-1", "trainer")
	d.add("ml", "finetune-0", "worker")
	d.add("team-c", "notebook-0", "jupyter")
	return d
}()
