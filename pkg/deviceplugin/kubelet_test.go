package deviceplugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
)

// kubelet is the kubelet's real device manager, started in the test's private
// /var/lib, with a settable set of active pods.
type kubelet struct {
	t    *testing.T
	mgr  *devicemanager.ManagerImpl
	mu   sync.Mutex
	pods []*v1.Pod
}

type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return false } // never garbage-collect allocations in tests

func startKubelet(t *testing.T) *kubelet {
	t.Helper()
	requireNamespace(t)
	// Every test gets an empty plugin directory: the kubelet's checkpoint would
	// otherwise carry allocations and resources from one test into the next.
	if err := os.MkdirAll(api.DevicePluginPath, 0o750); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(api.DevicePluginPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(api.DevicePluginPath, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	k := &kubelet{t: t}
	mgr, err := devicemanager.NewManagerImpl(nil, topologymanager.NewFakeManager())
	if err != nil {
		t.Fatalf("NewManagerImpl: %v", err)
	}
	if err := mgr.Start(klog.Background(), k.activePods, sourcesReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		t.Fatalf("starting the device manager: %v", err)
	}
	k.mgr = mgr
	t.Cleanup(func() { k.stop() })
	return k
}

func (k *kubelet) stop() {
	if k.mgr != nil {
		_ = k.mgr.Stop(klog.Background())
		k.mgr = nil
	}
}

// restart stops the device manager and starts a new one, as a kubelet restart does.
func (k *kubelet) restart() {
	k.t.Helper()
	k.stop()
	mgr, err := devicemanager.NewManagerImpl(nil, topologymanager.NewFakeManager())
	if err != nil {
		k.t.Fatalf("NewManagerImpl: %v", err)
	}
	if err := mgr.Start(klog.Background(), k.activePods, sourcesReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		k.t.Fatalf("restarting the device manager: %v", err)
	}
	k.mgr = mgr
}

func (k *kubelet) activePods() []*v1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.pods)
}

// capacity returns the kubelet's capacity and allocatable counts per resource.
func (k *kubelet) capacity() (map[string]int64, map[string]int64) {
	c, a, _ := k.mgr.GetCapacity()
	cap, alloc := map[string]int64{}, map[string]int64{}
	for n, q := range c {
		cap[string(n)] = q.Value()
	}
	for n, q := range a {
		alloc[string(n)] = q.Value()
	}
	return cap, alloc
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitCapacity waits until the kubelet's allocatable equals want for every named resource
// (a zero means the resource is gone or empty).
func (k *kubelet) waitAllocatable(t *testing.T, want map[string]int64) {
	t.Helper()
	var last map[string]int64
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			_, alloc := k.capacity()
			last = alloc
			for n, v := range want {
				if alloc[n] != v {
					return false, nil
				}
			}
			return true, nil
		})
	if err != nil {
		t.Fatalf("kubelet allocatable = %v, want %v", last, want)
	}
}

// pod builds a pod whose containers request the given resources.
func pod(name string, containers ...v1.ResourceList) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)}}
	for i, r := range containers {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{
			Name:      fmt.Sprintf("c%d", i),
			Resources: v1.ResourceRequirements{Limits: r, Requests: r},
		})
	}
	return p
}

func req(name string, n int64) v1.ResourceList {
	return v1.ResourceList{v1.ResourceName(name): *resource.NewQuantity(n, resource.DecimalSI)}
}

// forget drops a pod from the active pods (after a failed admission).
func (k *kubelet) forget(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = slices.DeleteFunc(k.pods, func(p *v1.Pod) bool { return p.Name == name })
}

// admit runs the kubelet's allocation for every container of p and returns
// each container's NVIDIA_VISIBLE_DEVICES (or CDI devices) value.
func (k *kubelet) admit(t *testing.T, p *v1.Pod) ([]string, error) {
	t.Helper()
	k.mu.Lock()
	k.pods = append(k.pods, p)
	k.mu.Unlock()
	var out []string
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		if err := k.mgr.Allocate(p, c); err != nil {
			return nil, err
		}
		opts, err := k.mgr.GetDeviceRunContainerOptions(context.Background(), p, c)
		if err != nil {
			return nil, err
		}
		if opts == nil {
			// The device manager answers nil options when it allocated nothing
			// to the container (its resource is not registered yet).
			return nil, fmt.Errorf("container %s of pod %s got no devices", c.Name, p.Name)
		}
		var val []string
		for _, e := range opts.Envs {
			if e.Name == deviceplugin.VisibleDevicesEnv {
				val = append(val, e.Value)
			}
		}
		for _, d := range opts.CDIDevices {
			val = append(val, d.Name)
		}
		out = append(out, strings.Join(val, ";"))
	}
	return out, nil
}

// runPlugin runs a device-plugin manager against the kubelet until the test ends.
func runPlugin(t *testing.T, m *deviceplugin.Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func pluginConfig() deviceplugin.Config {
	return deviceplugin.Config{PluginDir: api.DevicePluginPath}
}

func sockets(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(api.DevicePluginPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Base(e.Name()))
	}
	return out
}
