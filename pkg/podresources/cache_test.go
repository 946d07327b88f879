package podresources_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/podresources"
	prt "github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
)

const (
	gpu0 = "GPU-0d6b7c9e-0000-4000-8000-000000000000"
	gpu1 = "GPU-0d6b7c9e-0000-4000-8000-000000000001"
	mig0 = "MIG-5a1c2e3f-0000-4000-8000-000000000000"
	mig1 = "MIG-5a1c2e3f-0000-4000-8000-000000000001"
)

func pod(ns, name string, containers ...prt.Container) prt.Pod {
	return prt.Pod{Namespace: ns, Name: name, Containers: containers}
}

func ctr(name string, devices ...prt.Device) prt.Container {
	return prt.Container{Name: name, Devices: devices}
}

func dev(resource string, ids ...string) prt.Device {
	return prt.Device{Resource: resource, IDs: ids}
}

// node is a MIG + time-slicing node: a whole GPU, two MIG devices, and two
// pods sharing gpu1 through replicas.
func node() []prt.Pod {
	return []prt.Pod{
		pod("train", "trainer-0", ctr("main", dev("nvidia.com/gpu", gpu0)), ctr("sidecar")),
		pod("serve", "llm-0", ctr("server", dev("nvidia.com/mig-1g.10gb", mig0)), ctr("tokenizer", dev("nvidia.com/mig-1g.10gb", mig1))),
		pod("nb", "alice", ctr("notebook", dev("nvidia.com/gpu.shared", gpu1+"::0"))),
		pod("nb", "bob", ctr("notebook", dev("nvidia.com/gpu.shared", gpu1+"::3"), dev("example.com/nic", "nic-0"))),
		pod("kube-system", "coredns"),
	}
}

func refreshed(t *testing.T, o podresources.Options) *podresources.Cache {
	t.Helper()
	c := podresources.New(o)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	return c
}

func TestHolders(t *testing.T) {
	srv := prt.Start(t, node()...)
	c := refreshed(t, podresources.Options{Socket: srv.Socket()})

	alice := podresources.Holder{Namespace: "nb", Pod: "alice", Container: "notebook", Resource: "nvidia.com/gpu.shared", DeviceID: gpu1 + "::0"}
	bob := podresources.Holder{Namespace: "nb", Pod: "bob", Container: "notebook", Resource: "nvidia.com/gpu.shared", DeviceID: gpu1 + "::3"}
	tests := []struct {
		name     string
		deviceID string
		want     []podresources.Holder
	}{
		{name: "whole gpu", deviceID: gpu0, want: []podresources.Holder{{Namespace: "train", Pod: "trainer-0", Container: "main", Resource: "nvidia.com/gpu", DeviceID: gpu0}}},
		{name: "mig device", deviceID: mig1, want: []podresources.Holder{{Namespace: "serve", Pod: "llm-0", Container: "tokenizer", Resource: "nvidia.com/mig-1g.10gb", DeviceID: mig1}}},
		{name: "replicas of a shared gpu", deviceID: gpu1, want: []podresources.Holder{alice, bob}},
		{name: "one replica exactly", deviceID: gpu1 + "::3", want: []podresources.Holder{bob}},
		{name: "other resource", deviceID: "nic-0", want: []podresources.Holder{{Namespace: "nb", Pod: "bob", Container: "notebook", Resource: "example.com/nic", DeviceID: "nic-0"}}},
		{name: "prefix of an id is not a replica", deviceID: "GPU-0d6b7c9e", want: nil},
		{name: "free device", deviceID: "GPU-free", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, c.Holders(tt.deviceID)); diff != "" {
				t.Errorf("Holders(%q) (-want +got):\n%s", tt.deviceID, diff)
			}
		})
	}

	all := c.All()
	if len(all) != 6 {
		t.Fatalf("All() has %d holders, want 6: %v", len(all), all)
	}
	if all[0].Namespace != "nb" || all[len(all)-1].Namespace != "train" {
		t.Errorf("All() not sorted by namespace: %v", all)
	}
	if s := c.Status(); !s.OK || s.Reason != "" || s.Updated.IsZero() {
		t.Errorf("Status() = %+v, want OK with a time", s)
	}
	// Callers may modify what they get without touching the view.
	h := c.Holders(gpu0)
	h[0].Pod = "changed"
	if got := c.Holders(gpu0)[0].Pod; got != "trainer-0" {
		t.Errorf("Holders returned the cache's own slice: pod now %q", got)
	}
}

// largeNode has more pods than a 4 MiB gRPC message holds.
func largeNode(n int) []prt.Pod {
	pods := make([]prt.Pod, n)
	for i := range pods {
		pods[i] = pod("batch-namespace-with-a-long-name", fmt.Sprintf("inference-job-%06d-with-a-pod-name-as-long-as-real-ones-get", i),
			ctr("main", dev("nvidia.com/gpu.shared", fmt.Sprintf("GPU-0d6b7c9e-0000-4000-8000-%012d::%d", i%8, i%16))),
			ctr("sidecar-proxy"))
	}
	return pods
}

func TestLargeResponse(t *testing.T) {
	const pods = 30000
	srv := prt.Start(t, largeNode(pods)...)

	// The premise: at gRPC's default limit this response does not fit.
	small := podresources.New(podresources.Options{Socket: srv.Socket(), MaxRecvBytes: 4 << 20, Timeout: 30 * time.Second})
	err := small.Refresh(context.Background())
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Refresh with a 4 MiB limit: %v, want ResourceExhausted (the test's response is not larger than 4 MiB)", err)
	}

	c := refreshed(t, podresources.Options{Socket: srv.Socket(), Timeout: 30 * time.Second})
	if got := len(c.All()); got != pods {
		t.Errorf("All() has %d holders, want %d", got, pods)
	}
	if got := len(c.Holders("GPU-0d6b7c9e-0000-4000-8000-000000000003")); got != pods/8 {
		t.Errorf("holders of gpu 3: %d, want %d", got, pods/8)
	}
}

func TestSocketMissing(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC))
	c := podresources.New(podresources.Options{Socket: socket, Clock: clk})
	reg := prometheus.NewPedanticRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}

	err := c.Refresh(context.Background())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Refresh: %v, want an error wrapping fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), socket) {
		t.Errorf("Refresh error %q does not name the socket %s", err, socket)
	}
	s := c.Status()
	if want := "kubelet socket " + socket + " not found"; s.OK || s.Reason != want || !s.Updated.IsZero() {
		t.Errorf("Status() = %+v, want not OK, reason %q, never updated", s, want)
	}
	if c.All() != nil {
		t.Errorf("All() = %v, want nil", c.All())
	}
	want := `
# HELP tessera_podresources_errors_total Failed refreshes of the PodResources view by reason (socket_not_found, socket_error, timeout, unavailable, response_too_large, list_failed).
# TYPE tessera_podresources_errors_total counter
tessera_podresources_errors_total{reason="list_failed"} 0
tessera_podresources_errors_total{reason="response_too_large"} 0
tessera_podresources_errors_total{reason="socket_error"} 0
tessera_podresources_errors_total{reason="socket_not_found"} 1
tessera_podresources_errors_total{reason="timeout"} 0
tessera_podresources_errors_total{reason="unavailable"} 0
# HELP tessera_podresources_last_success_timestamp_seconds Unix time of the last successful List call to the kubelet PodResources API; 0 if none yet.
# TYPE tessera_podresources_last_success_timestamp_seconds gauge
tessera_podresources_last_success_timestamp_seconds 0
# HELP tessera_podresources_up 1 if the last List call to the kubelet PodResources API succeeded, 0 if not (pod labels may be stale or missing).
# TYPE tessera_podresources_up gauge
tessera_podresources_up 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tessera_podresources_up", "tessera_podresources_errors_total", "tessera_podresources_last_success_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}

func TestServerGoesAwayKeepsLastView(t *testing.T) {
	srv := prt.Start(t, node()...)
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC))
	c := podresources.New(podresources.Options{Socket: srv.Socket(), Clock: clk})
	reg := prometheus.NewPedanticRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	view := c.All()
	updated := c.Status().Updated

	steps := []struct {
		name       string
		do         func()
		wantReason string // substring
		wantClass  string
	}{
		{name: "kubelet crashed, stale socket", do: srv.Kill, wantReason: "list failed: kubelet socket " + srv.Socket(), wantClass: podresources.ReasonUnavailable},
		{name: "kubelet stopped, socket removed", do: srv.Stop, wantReason: "kubelet socket " + srv.Socket() + " not found", wantClass: podresources.ReasonSocketNotFound},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			step.do()
			clk.Step(time.Minute)
			err := c.Refresh(ctx)
			if err == nil {
				t.Fatal("Refresh succeeded with the server gone")
			}
			s := c.Status()
			if s.OK || !strings.Contains(s.Reason, step.wantReason) || !s.Updated.Equal(updated) {
				t.Errorf("Status() = %+v, want not OK, reason containing %q, updated %v", s, step.wantReason, updated)
			}
			if diff := cmp.Diff(view, c.All()); diff != "" {
				t.Errorf("view changed after a failed refresh (-before +after):\n%s", diff)
			}
			if got := errorsTotal(t, reg, step.wantClass); got != 1 {
				t.Errorf("errors_total{reason=%q} = %v, want 1", step.wantClass, got)
			}
		})
	}
	if got, err := testutil.GatherAndCount(reg, "tessera_podresources_up"); err != nil || got != 1 {
		t.Fatalf("up series: %d, %v", got, err)
	}

	// The kubelet comes back with other pods: the next refresh reconnects.
	srv.SetPods(pod("train", "trainer-1", ctr("main", dev("nvidia.com/gpu", gpu1))))
	srv.Restart()
	clk.Step(time.Minute)
	if err := c.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after the kubelet restarted: %v", err)
	}
	if s := c.Status(); !s.OK || !s.Updated.Equal(clk.Now()) {
		t.Errorf("Status() = %+v, want OK at %v", s, clk.Now())
	}
	if got := c.Holders(gpu1); len(got) != 1 || got[0].Pod != "trainer-1" {
		t.Errorf("Holders(gpu1) = %v, want trainer-1", got)
	}
	if got := c.Holders(gpu0); got != nil {
		t.Errorf("Holders(gpu0) = %v after the pod left, want nil", got)
	}
	want := fmt.Sprintf(`
# HELP tessera_podresources_last_success_timestamp_seconds Unix time of the last successful List call to the kubelet PodResources API; 0 if none yet.
# TYPE tessera_podresources_last_success_timestamp_seconds gauge
tessera_podresources_last_success_timestamp_seconds %d
# HELP tessera_podresources_up 1 if the last List call to the kubelet PodResources API succeeded, 0 if not (pod labels may be stale or missing).
# TYPE tessera_podresources_up gauge
tessera_podresources_up 1
# HELP tessera_podresources_device_holders Number of (container, device) assignments in the cached PodResources view.
# TYPE tessera_podresources_device_holders gauge
tessera_podresources_device_holders 1
`, clk.Now().Unix())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tessera_podresources_up", "tessera_podresources_last_success_timestamp_seconds", "tessera_podresources_device_holders"); err != nil {
		t.Error(err)
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 20*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestRunRefreshesOnInterval(t *testing.T) {
	srv := prt.Start(t, node()...)
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC))
	c := podresources.New(podresources.Options{Socket: srv.Socket(), Interval: 10 * time.Second, Clock: clk})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	poll(t, "the first refresh", func() bool { return c.Status().OK })
	first := c.Status().Updated

	srv.SetPods(pod("train", "trainer-1", ctr("main", dev("nvidia.com/gpu", gpu0))))
	// No tick yet: the view is the one from the start.
	if got := c.Holders(gpu0); len(got) != 1 || got[0].Pod != "trainer-0" {
		t.Fatalf("Holders(gpu0) before the interval = %v, want trainer-0", got)
	}
	clk.Step(10 * time.Second)
	poll(t, "the refresh after one interval", func() bool {
		h := c.Holders(gpu0)
		return len(h) == 1 && h[0].Pod == "trainer-1"
	})
	if s := c.Status(); !s.Updated.Equal(first.Add(10 * time.Second)) {
		t.Errorf("Updated = %v, want %v", s.Updated, first.Add(10*time.Second))
	}

	// The kubelet going away does not end Run; the view stays.
	srv.Stop()
	clk.Step(10 * time.Second)
	poll(t, "the failed refresh", func() bool { return !c.Status().OK })
	if got := c.Holders(gpu0); len(got) != 1 || got[0].Pod != "trainer-1" {
		t.Errorf("Holders(gpu0) after the kubelet left = %v, want the last view", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while the kubelet was away", err)
	default:
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestRunWithoutKubelet(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "kubelet.sock")
	c := podresources.New(podresources.Options{Socket: socket, Clock: clocktesting.NewFakeClock(time.Now())})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	poll(t, "the first refresh attempt", func() bool { return strings.Contains(c.Status().Reason, socket) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestDefaults(t *testing.T) {
	c := podresources.New(podresources.Options{})
	if c.Socket() != podresources.DefaultSocket {
		t.Errorf("Socket() = %q, want %q", c.Socket(), podresources.DefaultSocket)
	}
	if s := c.Status(); s.OK || s.Reason == "" {
		t.Errorf("Status() before any refresh = %+v, want not OK with a reason", s)
	}
}

func errorsTotal(t *testing.T, reg prometheus.Gatherer, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tessera_podresources_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no tessera_podresources_errors_total{reason=%q}", reason)
	return 0
}
