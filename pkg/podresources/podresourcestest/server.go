// Package podresourcestest runs the kubelet's own PodResources v1 gRPC server
// (k8s.io/kubernetes/pkg/kubelet/apis/podresources) on a unix socket in a
// temporary directory, with a settable list of pods, containers and devices
// (Start), or over the kubelet's device manager and its active pods as the
// kubelet wires it (StartFrom), so tests of PodResources clients exercise
// the real server code.
//
// Only tests may import it: it pulls in k8s.io/kubernetes.
package podresourcestest

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	kubeletpodresources "k8s.io/kubernetes/pkg/kubelet/apis/podresources"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// Device is one resource's devices held by a container.
type Device struct {
	Resource string   // e.g. "nvidia.com/gpu", "nvidia.com/mig-1g.10gb"
	IDs      []string // device IDs as the device plugin advertised them
}

// Container is a container and the devices the kubelet assigned to it.
type Container struct {
	Name    string
	Devices []Device
}

// Pod is a pod on the node.
type Pod struct {
	Namespace, Name string
	Containers      []Container
}

// Server is a running kubelet PodResources server.
type Server struct {
	t      testing.TB
	dir    string
	socket string

	// Set by StartFrom: the node's active pods and the device manager
	// that allocated their devices.
	activePods func() []*v1.Pod
	dm         DeviceManager

	mu      sync.Mutex
	pods    []Pod
	devices map[types.UID]map[string][]Device // by pod UID and container name
	srv     *grpc.Server
	lis     *net.UnixListener
	done    chan struct{}
}

// Start serves pods on a new socket (Socket()) and stops the server when the
// test ends. The directory is short-lived and short-named, because unix
// socket paths are limited to about 100 bytes.
func Start(t testing.TB, pods ...Pod) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "podres")
	if err != nil {
		t.Fatalf("creating the pod resources socket directory: %v", err)
	}
	s := &Server{t: t, dir: dir, socket: filepath.Join(dir, "kubelet.sock")}
	s.SetPods(pods...)
	t.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// DeviceManager is what the kubelet's PodResources server reads of its
// device manager (*devicemanager.ManagerImpl, e.g. from pkg/deviceplugin/kubelettest).
type DeviceManager interface {
	GetDevices(podUID, containerName string) devicemanager.ResourceDeviceInstances
	GetAllocatableDevices() devicemanager.ResourceDeviceInstances
	UpdateAllocatedDevices()
}

// StartFrom serves the pods activePods returns with the devices dm
// allocated to them, as a kubelet does; SetPods has no effect on it.
func StartFrom(t testing.TB, activePods func() []*v1.Pod, dm DeviceManager) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "podres")
	if err != nil {
		t.Fatalf("creating the pod resources socket directory: %v", err)
	}
	s := &Server{t: t, dir: dir, socket: filepath.Join(dir, "kubelet.sock"), activePods: activePods, dm: dm}
	t.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// Socket is the path of the server's unix socket.
func (s *Server) Socket() string { return s.socket }

// SetPods replaces the pods the server reports.
func (s *Server) SetPods(pods ...Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = slices.Clone(pods)
	s.devices = make(map[types.UID]map[string][]Device, len(pods))
	for _, p := range pods {
		byContainer := map[string][]Device{}
		for _, c := range p.Containers {
			byContainer[c.Name] = c.Devices
		}
		s.devices[uid(p.Namespace, p.Name)] = byContainer
	}
}

// Restart serves again on the same socket after Stop or Kill (a kubelet
// restart). It does nothing if the server is running.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	_ = os.Remove(s.socket) // a stale socket left by Kill
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.socket, Net: "unix"})
	if err != nil {
		s.t.Fatalf("listening on %s: %v", s.socket, err)
	}
	ctx := klog.NewContext(context.Background(), klog.Background().V(4))
	srv := grpc.NewServer()
	providers := kubeletpodresources.PodResourcesProviders{
		Pods:             (*podsProvider)(s),
		Devices:          (*devicesProvider)(s),
		Cpus:             noCPUs{},
		Memory:           noMemory{},
		DynamicResources: noDynamicResources{},
	}
	if s.dm != nil {
		providers.Pods = activePods(s.activePods)
		providers.Devices = kubeletDevices{s.dm}
	}
	podresourcesv1.RegisterPodResourcesListerServer(srv, kubeletpodresources.NewV1PodResourcesServer(ctx, providers))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	s.srv, s.lis, s.done = srv, lis, done
}

// Stop stops serving and removes the socket, as a clean kubelet shutdown does.
func (s *Server) Stop() { s.stop(true) }

// Kill stops serving but leaves the socket file behind, as a crashed kubelet
// does: clients find the socket but cannot connect.
func (s *Server) Kill() { s.stop(false) }

func (s *Server) stop(unlink bool) {
	s.mu.Lock()
	srv, lis, done := s.srv, s.lis, s.done
	s.srv, s.lis, s.done = nil, nil, nil
	s.mu.Unlock()
	if srv == nil {
		if unlink {
			_ = os.Remove(s.socket) // the stale socket of an earlier Kill
		}
		return
	}
	lis.SetUnlinkOnClose(unlink)
	srv.Stop()
	<-done
}

func (s *Server) containerDevices(podUID, container string) []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.devices[types.UID(podUID)][container]
}

func (s *Server) snapshot() []Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods
}

func uid(namespace, name string) types.UID { return types.UID(namespace + "/" + name) }

func toV1(p Pod) *v1.Pod {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: uid(p.Namespace, p.Name)}}
	for _, c := range p.Containers {
		pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: c.Name})
	}
	return pod
}

// podsProvider implements the kubelet's PodsProvider over the settable pods.
type podsProvider Server

var _ kubeletpodresources.PodsProvider = (*podsProvider)(nil)

func (p *podsProvider) GetPods() []*v1.Pod {
	pods := (*Server)(p).snapshot()
	out := make([]*v1.Pod, 0, len(pods))
	for _, pod := range pods {
		out = append(out, toV1(pod))
	}
	return out
}

func (p *podsProvider) GetActivePods() []*v1.Pod { return p.GetPods() }

func (p *podsProvider) GetPodByName(namespace, name string) (*v1.Pod, bool) {
	for _, pod := range (*Server)(p).snapshot() {
		if pod.Namespace == namespace && pod.Name == name {
			return toV1(pod), true
		}
	}
	return nil, false
}

// devicesProvider implements the kubelet's DevicesProvider over the settable pods.
type devicesProvider Server

var _ kubeletpodresources.DevicesProvider = (*devicesProvider)(nil)

func (d *devicesProvider) UpdateAllocatedDevices() {}

func (d *devicesProvider) GetDevices(podUID, containerName string) []*podresourcesv1.ContainerDevices {
	var out []*podresourcesv1.ContainerDevices
	for _, dev := range (*Server)(d).containerDevices(podUID, containerName) {
		out = append(out, &podresourcesv1.ContainerDevices{ResourceName: dev.Resource, DeviceIds: slices.Clone(dev.IDs)})
	}
	return out
}

// GetAllocatableDevices reports every device some container holds, per resource.
func (d *devicesProvider) GetAllocatableDevices() []*podresourcesv1.ContainerDevices {
	byResource := map[string][]string{}
	for _, pod := range (*Server)(d).snapshot() {
		for _, c := range pod.Containers {
			for _, dev := range c.Devices {
				byResource[dev.Resource] = append(byResource[dev.Resource], dev.IDs...)
			}
		}
	}
	var out []*podresourcesv1.ContainerDevices
	for res, ids := range byResource {
		out = append(out, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids})
	}
	return out
}

// activePods implements the kubelet's PodsProvider over a kubelet's active pods.
type activePods func() []*v1.Pod

var _ kubeletpodresources.PodsProvider = activePods(nil)

func (f activePods) GetPods() []*v1.Pod       { return f() }
func (f activePods) GetActivePods() []*v1.Pod { return f() }

func (f activePods) GetPodByName(namespace, name string) (*v1.Pod, bool) {
	for _, p := range f() {
		if p.Namespace == namespace && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// kubeletDevices implements the kubelet's DevicesProvider over its device
// manager, converting as the kubelet's container manager does
// (containerDevicesFromResourceDeviceInstances, unexported there): one
// entry per device and NUMA node.
type kubeletDevices struct{ dm DeviceManager }

var _ kubeletpodresources.DevicesProvider = kubeletDevices{}

func (k kubeletDevices) UpdateAllocatedDevices() { k.dm.UpdateAllocatedDevices() }

func (k kubeletDevices) GetDevices(podUID, containerName string) []*podresourcesv1.ContainerDevices {
	return containerDevices(k.dm.GetDevices(podUID, containerName))
}

func (k kubeletDevices) GetAllocatableDevices() []*podresourcesv1.ContainerDevices {
	return containerDevices(k.dm.GetAllocatableDevices())
}

func containerDevices(devs devicemanager.ResourceDeviceInstances) []*podresourcesv1.ContainerDevices {
	var out []*podresourcesv1.ContainerDevices
	for _, resource := range slices.Sorted(maps.Keys(devs)) {
		byID := devs[resource]
		for _, id := range slices.Sorted(maps.Keys(byID)) {
			nodes := byID[id].GetTopology().GetNodes()
			if len(nodes) == 0 {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: []string{id}})
				continue
			}
			for _, n := range nodes {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: []string{id},
					Topology: &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: n.GetID()}}}})
			}
		}
	}
	return out
}

type noCPUs struct{}

func (noCPUs) GetCPUs(string, string) []int64 { return nil }
func (noCPUs) GetAllocatableCPUs() []int64    { return nil }

type noMemory struct{}

func (noMemory) GetMemory(string, string) []*podresourcesv1.ContainerMemory { return nil }
func (noMemory) GetAllocatableMemory() []*podresourcesv1.ContainerMemory    { return nil }

type noDynamicResources struct{}

func (noDynamicResources) GetDynamicResources(*v1.Pod, *v1.Container) []*podresourcesv1.DynamicResource {
	return nil
}
