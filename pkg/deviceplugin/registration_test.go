package deviceplugin_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
)

// boundKubelet is a kubelet registration socket that exists (bound) but does
// not listen yet: the window a starting kubelet leaves between bind and
// listen, in which a plugin's registration is refused.
type boundKubelet struct {
	api.UnimplementedRegistrationServer

	fd   int
	path string
	reqs chan *api.RegisterRequest
	grpc *grpc.Server
}

func bindKubelet(t testing.TB, dir string) *boundKubelet {
	t.Helper()
	path := filepath.Join(dir, "kubelet.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		t.Fatalf("binding %s: %v", path, err)
	}
	k := &boundKubelet{fd: fd, path: path, reqs: make(chan *api.RegisterRequest, 16)}
	t.Cleanup(func() {
		if k.grpc != nil {
			k.grpc.Stop()
		} else {
			syscall.Close(fd)
		}
	})
	return k
}

// listen starts listening and answering registrations on the bound socket.
func (k *boundKubelet) listen(t testing.TB) {
	t.Helper()
	if err := syscall.Listen(k.fd, 16); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(k.fd), k.path)
	ln, err := net.FileListener(f)
	f.Close() // FileListener holds its own copy of the descriptor
	if err != nil {
		t.Fatal(err)
	}
	k.grpc = grpc.NewServer()
	api.RegisterRegistrationServer(k.grpc, k)
	go func() { _ = k.grpc.Serve(ln) }()
}

func (k *boundKubelet) Register(_ context.Context, r *api.RegisterRequest) (*api.Empty, error) {
	k.reqs <- r
	return &api.Empty{}, nil
}

// registrationAfterListen starts a plugin whose first registration is refused,
// then lets the kubelet listen and returns how long the plugin took to register.
func registrationAfterListen(t testing.TB) time.Duration {
	t.Helper()
	dir := t.TempDir()
	k := bindKubelet(t, dir)
	m := deviceplugin.NewManager(deviceplugin.Config{PluginDir: dir}, nil)
	if err := m.Update(machine(t, "pcie-4xl40s", nil), deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, failures := m.RegistrationStatus(); failures > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin never tried to register with a kubelet socket that does not listen")
		}
		time.Sleep(time.Millisecond)
	}
	if ok, _ := m.RegistrationStatus(); ok {
		t.Fatal("registered although the kubelet does not listen")
	}
	start := time.Now()
	k.listen(t)
	select {
	case r := <-k.reqs:
		took := time.Since(start)
		if r.ResourceName != "nvidia.com/gpu" {
			t.Errorf("registered %q, want nvidia.com/gpu", r.ResourceName)
		}
		for {
			if ok, _ := m.RegistrationStatus(); ok {
				return took
			}
			if time.Now().After(deadline) {
				t.Fatal("the kubelet accepted the registration but the manager does not say registered")
			}
			time.Sleep(time.Millisecond)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no registration within 10 s of the kubelet listening: a refused registration is not retried")
	}
	return 0
}

// TestRegistrationRetriedUntilKubeletListens: a kubelet socket that appears
// before the kubelet listens (bind precedes listen) refuses the first
// registration; no further socket event comes, so only a retry registers.
func TestRegistrationRetriedUntilKubeletListens(t *testing.T) {
	took := registrationAfterListen(t)
	t.Logf("registered %v after the kubelet started listening", took.Round(time.Millisecond))
}

// BenchmarkReRegistration measures the time from the kubelet listening to the
// plugin registered, after a refused first attempt; target p99 <= 1 s.
func BenchmarkReRegistration(b *testing.B) {
	var took []time.Duration
	for b.Loop() {
		took = append(took, registrationAfterListen(b))
	}
	slices.Sort(took)
	pct := func(p float64) float64 {
		return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}
