package deviceplugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/kubelettest"
)

// kubelet is the kubelet's real device manager (kubelettest), started in
// the test's private /var/lib, with a settable set of active pods.
type kubelet struct {
	*kubelettest.Kubelet
}

func startKubelet(t testing.TB) *kubelet {
	t.Helper()
	return &kubelet{kubelettest.Start(t)}
}

// capacity returns the kubelet's capacity and allocatable counts per resource.
func (k *kubelet) capacity() (map[string]int64, map[string]int64) {
	c, a, _ := k.Manager().GetCapacity()
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
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitCapacity waits until the kubelet's allocatable equals want for every named resource
// (a zero means the resource is gone or empty).
func (k *kubelet) waitAllocatable(t testing.TB, want map[string]int64) {
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

// admit runs the kubelet's allocation for every container of p and returns
// each container's NVIDIA_VISIBLE_DEVICES (or CDI devices) value.
func (k *kubelet) admit(t *testing.T, p *v1.Pod) ([]string, error) {
	t.Helper()
	if err := k.Admit(p); err != nil {
		return nil, err
	}
	var out []string
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		opts, err := k.Manager().GetDeviceRunContainerOptions(context.Background(), p, c)
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
func runPlugin(t testing.TB, m *deviceplugin.Manager) (stop func()) {
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
	return deviceplugin.Config{PluginDir: kubelettest.PluginDir}
}

func sockets(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(kubelettest.PluginDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Base(e.Name()))
	}
	return out
}
