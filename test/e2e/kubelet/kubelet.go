package kubelet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubernetes/pkg/kubelet/apis/podresources"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
)

// Config is one stand-in's node.
type Config struct {
	// NodeName is the Node the stand-in registers and serves.
	NodeName string `json:"nodeName"`
	// Kubeconfig is an admin kubeconfig file.
	Kubeconfig string `json:"kubeconfig"`
	// VarLib is the directory mounted over /var/lib in the stand-in's mount
	// namespace; the device plugins find the kubelet at
	// VarLib/kubelet/device-plugins/kubelet.sock. Start creates it.
	VarLib string `json:"varLib"`
	// PodResourcesSocket is where the PodResources API is served (the
	// agent's --pod-resources-socket).
	PodResourcesSocket string `json:"podResourcesSocket"`
	// Labels are set on the Node when the stand-in creates it.
	Labels map[string]string `json:"labels,omitempty"`
	// CPU and Memory are the Node's capacity, as quantities ("64", "512Gi").
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
}

// PluginDir is where a device plugin for cfg's node puts its sockets (the
// gpu-agent's --device-plugin-dir): the host path of the node's
// /var/lib/kubelet/device-plugins/.
func (c Config) PluginDir() string {
	return strings.TrimSuffix(c.VarLib, "/") + "/kubelet/device-plugins/"
}

func (c Config) validate() error {
	var errs []error
	for name, v := range map[string]string{"nodeName": c.NodeName, "kubeconfig": c.Kubeconfig, "varLib": c.VarLib, "podResourcesSocket": c.PodResourcesSocket} {
		if v == "" {
			errs = append(errs, fmt.Errorf("kubelet stand-in config: %s is required", name))
		}
	}
	for name, v := range map[string]string{"cpu": c.CPU, "memory": c.Memory} {
		if _, err := resource.ParseQuantity(v); err != nil {
			errs = append(errs, fmt.Errorf("kubelet stand-in config: %s %q: %w", name, v, err))
		}
	}
	return errors.Join(errs...)
}

// Run is the stand-in itself; it expects /var/lib to be private (Start
// arranges it) and returns when ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	restCfg.QPS, restCfg.Burst = 200, 400
	restCfg.UserAgent = "tessera-kubelet-standin/" + cfg.NodeName
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}

	k := &kubelet{cfg: cfg, client: client, active: map[types.UID]*v1.Pod{}}
	if err := os.MkdirAll("/var/lib/kubelet/device-plugins", 0o750); err != nil {
		return fmt.Errorf("creating the device-plugin directory: %w", err)
	}
	mgr, err := devicemanager.NewManagerImpl(nil, topologymanager.NewFakeManager())
	if err != nil {
		return fmt.Errorf("creating the device manager: %w", err)
	}
	if err := mgr.Start(logger, k.activePods, sourcesReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		return fmt.Errorf("starting the device manager: %w", err)
	}
	defer func() { _ = mgr.Stop(logger) }()
	k.devices = mgr

	_ = os.Remove(cfg.PodResourcesSocket)
	l, err := net.Listen("unix", cfg.PodResourcesSocket)
	if err != nil {
		return fmt.Errorf("serving the PodResources API on %s: %w", cfg.PodResourcesSocket, err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, podresources.NewV1PodResourcesServer(ctx, podresources.PodResourcesProviders{
		Pods: k, Devices: devicesProvider{mgr}, Cpus: noCPUs{}, Memory: noMemory{}, DynamicResources: noDRA{},
	}))
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	if err := k.registerNode(ctx); err != nil {
		return err
	}

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	pods := factory.Core().V1().Pods()
	k.pods = pods.Lister()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return ctx.Err()
	}
	logger.Info("Kubelet stand-in ready", "podResources", cfg.PodResourcesSocket)

	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			key, quit := queue.Get()
			if quit {
				return
			}
			if err := k.syncPod(ctx, key); err != nil {
				logger.Error(err, "Syncing pod", "pod", key)
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
			queue.Done(key)
		}
	})
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := k.syncNodeStatus(ctx); err != nil {
			logger.Error(err, "Updating node status")
		}
	}, 250*time.Millisecond)
	queue.ShutDown()
	wg.Wait()
	return nil
}

// deviceManager is what the stand-in uses of the kubelet's device manager.
type deviceManager interface {
	Allocate(pod *v1.Pod, container *v1.Container) error
	GetCapacity() (v1.ResourceList, v1.ResourceList, []string)
	UpdateAllocatedDevices()
}

type kubelet struct {
	cfg     Config
	client  kubernetes.Interface
	devices deviceManager
	pods    corelisters.PodLister

	mu     sync.Mutex
	active map[types.UID]*v1.Pod // admitted pods, as the device manager's activePods
}

func (k *kubelet) activePods() []*v1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := slices.Collect(maps.Values(k.active))
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// GetActivePods, GetPods and GetPodByName are the PodResources server's
// view of the node's pods: the admitted ones.
func (k *kubelet) GetActivePods() []*v1.Pod { return k.activePods() }
func (k *kubelet) GetPods() []*v1.Pod       { return k.activePods() }
func (k *kubelet) GetPodByName(namespace, name string) (*v1.Pod, bool) {
	for _, p := range k.activePods() {
		if p.Namespace == namespace && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func (k *kubelet) forget(uid types.UID) {
	k.mu.Lock()
	_, had := k.active[uid]
	delete(k.active, uid)
	k.mu.Unlock()
	if had {
		k.devices.UpdateAllocatedDevices() // gives the pod's devices back
	}
}

func (k *kubelet) syncPod(ctx context.Context, key string) error {
	logger := klog.FromContext(ctx)
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // a malformed key cannot be retried into shape
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.forgetByName(ns, name)
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case pod.DeletionTimestamp != nil:
		// No containers to stop: the pod is gone as soon as its devices are back.
		k.forget(pod.UID)
		uid := pod.UID
		err := k.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("finishing the deletion of pod %s: %w", key, err)
		}
		logger.V(2).Info("Pod deleted", "pod", key)
		return nil
	case pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed:
		k.forget(pod.UID)
		return nil
	}
	k.mu.Lock()
	_, admitted := k.active[pod.UID]
	if !admitted {
		k.active[pod.UID] = pod
	}
	k.mu.Unlock()
	if admitted {
		return nil
	}
	if err := k.admit(pod); err != nil {
		k.forget(pod.UID)
		logger.Info("Pod rejected at admission", "pod", key, "err", err)
		return k.setStatus(ctx, pod, func(s *v1.PodStatus) {
			s.Phase, s.Reason, s.Message = v1.PodFailed, "UnexpectedAdmissionError", "Allocate failed due to "+err.Error()
		})
	}
	logger.V(2).Info("Pod admitted", "pod", key)
	return k.setStatus(ctx, pod, func(s *v1.PodStatus) { running(pod, s) })
}

func (k *kubelet) forgetByName(ns, name string) {
	for _, p := range k.activePods() {
		if p.Namespace == ns && p.Name == name {
			k.forget(p.UID)
		}
	}
}

// admit allocates the devices of every container of pod, as the kubelet's
// admission does (restartable init containers too).
func (k *kubelet) admit(pod *v1.Pod) error {
	for i := range pod.Spec.InitContainers {
		if err := k.devices.Allocate(pod, &pod.Spec.InitContainers[i]); err != nil {
			return err
		}
	}
	for i := range pod.Spec.Containers {
		if err := k.devices.Allocate(pod, &pod.Spec.Containers[i]); err != nil {
			return err
		}
	}
	return nil
}

func running(pod *v1.Pod, s *v1.PodStatus) {
	now := metav1.Now()
	s.Phase, s.HostIP, s.PodIP, s.StartTime = v1.PodRunning, "127.0.0.1", "127.0.0.1", &now
	s.HostIPs, s.PodIPs = []v1.HostIP{{IP: "127.0.0.1"}}, []v1.PodIP{{IP: "127.0.0.1"}}
	for _, t := range []v1.PodConditionType{v1.PodInitialized, v1.PodReadyToStartContainers, v1.ContainersReady, v1.PodReady} {
		setCondition(s, v1.PodCondition{Type: t, Status: v1.ConditionTrue, LastTransitionTime: now})
	}
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, v1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: new(bool),
			State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
		})
		*s.ContainerStatuses[len(s.ContainerStatuses)-1].Started = true
	}
}

func setCondition(s *v1.PodStatus, c v1.PodCondition) {
	for i := range s.Conditions {
		if s.Conditions[i].Type == c.Type {
			s.Conditions[i] = c
			return
		}
	}
	s.Conditions = append(s.Conditions, c)
}

// setStatus writes pod's status as mutate makes it, retrying conflicts.
func (k *kubelet) setStatus(ctx context.Context, pod *v1.Pod, mutate func(*v1.PodStatus)) error {
	p := pod.DeepCopy()
	for range 5 {
		mutate(&p.Status)
		_, err := k.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("updating the status of pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		if p, err = k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("reading pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if p.UID != pod.UID {
			return nil
		}
	}
	return fmt.Errorf("updating the status of pod %s/%s: conflicts persist", pod.Namespace, pod.Name)
}

// registerNode creates the Node (or takes over an existing one) with its
// status: the device manager's resources are added as they register.
func (k *kubelet) registerNode(ctx context.Context) error {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: map[string]string{
		v1.LabelHostname: k.cfg.NodeName, v1.LabelOSStable: "linux", v1.LabelArchStable: "amd64",
	}}}
	maps.Copy(node.Labels, k.cfg.Labels)
	node.Status = k.nodeStatus(nil)
	_, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("registering node %s: %w", k.cfg.NodeName, err)
	}
	return k.syncNodeStatus(ctx)
}

// nodeStatus is the status the Node should have; old keeps its other fields.
func (k *kubelet) nodeStatus(old *v1.NodeStatus) v1.NodeStatus {
	var s v1.NodeStatus
	if old != nil {
		s = *old.DeepCopy()
	}
	capacity := v1.ResourceList{
		v1.ResourceCPU:    resource.MustParse(k.cfg.CPU),
		v1.ResourceMemory: resource.MustParse(k.cfg.Memory),
		v1.ResourcePods:   resource.MustParse("110"),
	}
	allocatable := capacity.DeepCopy()
	if k.devices != nil {
		devCap, devAlloc, _ := k.devices.GetCapacity()
		maps.Copy(capacity, devCap)
		maps.Copy(allocatable, devAlloc)
	}
	// Resources the device manager dropped (a MIG layout change) leave the
	// node, as a real kubelet's node status says 0 for them.
	s.Capacity, s.Allocatable = capacity, allocatable
	ready := v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
		Message: "tessera kubelet stand-in is posting ready status"}
	found := false
	for i := range s.Conditions {
		if s.Conditions[i].Type == v1.NodeReady {
			ready.LastHeartbeatTime, ready.LastTransitionTime = s.Conditions[i].LastHeartbeatTime, s.Conditions[i].LastTransitionTime
			s.Conditions[i], found = ready, true
		}
	}
	if !found {
		now := metav1.Now()
		ready.LastHeartbeatTime, ready.LastTransitionTime = now, now
		s.Conditions = append(s.Conditions, ready)
	}
	s.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}, {Type: v1.NodeHostName, Address: k.cfg.NodeName}}
	s.NodeInfo.KubeletVersion, s.NodeInfo.OperatingSystem, s.NodeInfo.Architecture = "v1.36.5-tessera-standin", "linux", "amd64"
	return s
}

// syncNodeStatus writes the node status when the device manager's
// resources changed.
func (k *kubelet) syncNodeStatus(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", k.cfg.NodeName, err)
	}
	want := k.nodeStatus(&node.Status)
	if apiequality.Semantic.DeepEqual(want, node.Status) {
		return nil
	}
	node.Status = want
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("updating the status of node %s: %w", k.cfg.NodeName, err)
	}
	return nil
}

// sourcesReady tells the device manager that the stand-in knows every pod,
// so that devices of pods no longer active are given back.
type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return true }

// devicesProvider adapts the device manager to the PodResources server as
// the kubelet's container manager does.
type devicesProvider struct{ m *devicemanager.ManagerImpl }

func (d devicesProvider) UpdateAllocatedDevices() { d.m.UpdateAllocatedDevices() }
func (d devicesProvider) GetDevices(podUID, containerName string) []*podresourcesv1.ContainerDevices {
	return containerDevices(d.m.GetDevices(podUID, containerName))
}
func (d devicesProvider) GetAllocatableDevices() []*podresourcesv1.ContainerDevices {
	return containerDevices(d.m.GetAllocatableDevices())
}

// containerDevices is the kubelet's containerDevicesFromResourceDeviceInstances
// (pkg/kubelet/cm, unexported): one entry per device and NUMA node.
func containerDevices(devs devicemanager.ResourceDeviceInstances) []*podresourcesv1.ContainerDevices {
	var out []*podresourcesv1.ContainerDevices
	for _, res := range slices.Sorted(maps.Keys(devs)) {
		for _, id := range slices.Sorted(maps.Keys(devs[res])) {
			topo := devs[res][id].GetTopology()
			if topo == nil {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: []string{id}})
				continue
			}
			for _, n := range topo.GetNodes() {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: []string{id},
					Topology: &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: n.GetID()}}}})
			}
		}
	}
	return out
}

// The stand-in has no CPU, memory or DRA managers: nothing is exclusive.
type (
	noCPUs   struct{}
	noMemory struct{}
	noDRA    struct{}
)

func (noCPUs) GetCPUs(string, string) []int64 { return nil }
func (noCPUs) GetAllocatableCPUs() []int64    { return nil }
func (noMemory) GetMemory(string, string) []*podresourcesv1.ContainerMemory {
	return nil
}
func (noMemory) GetAllocatableMemory() []*podresourcesv1.ContainerMemory { return nil }
func (noDRA) GetDynamicResources(*v1.Pod, *v1.Container) []*podresourcesv1.DynamicResource {
	return nil
}
