package procmap

import (
	"context"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// PodIndex is the PodDirectory of one node, kept current by a watch of the
// node's pods (list once, then watch). It keeps only the UID, names and
// container IDs of each pod. It is safe for concurrent use.
type PodIndex struct {
	lw cache.ListerWatcher

	mu     sync.RWMutex
	byUID  map[string]PodInfo
	synced func() bool
}

var _ PodDirectory = (*PodIndex)(nil)

// NewPodIndex returns an index over the pods lw lists and watches, which
// should be this node's pods (fieldSelector spec.nodeName=<node>). It does
// no I/O until Run.
func NewPodIndex(lw cache.ListerWatcher) *PodIndex {
	return &PodIndex{lw: lw, byUID: map[string]PodInfo{}, synced: func() bool { return false }}
}

// Run lists and watches pods until ctx is done, then returns nil.
func (x *PodIndex) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("pod-index")
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		Logger:        &logger,
		ListerWatcher: x.lw,
		ObjectType:    &v1.Pod{},
		Transform:     trimPod,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    x.put,
			UpdateFunc: func(_, obj any) { x.put(obj) },
			DeleteFunc: x.remove,
		},
	})
	x.mu.Lock()
	x.synced = ctrl.HasSynced
	x.mu.Unlock()
	ctrl.RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the first list has been applied.
func (x *PodIndex) HasSynced() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.synced()
}

// Pod returns the pod with the UID.
func (x *PodIndex) Pod(uid string) (PodInfo, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	p, ok := x.byUID[uid]
	return p, ok
}

// trimPod keeps what the index reads, so that the informer's store holds
// small objects.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*v1.Pod)
	if !ok {
		return obj, nil
	}
	t := &v1.Pod{}
	t.Name, t.Namespace, t.UID, t.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	t.Status.ContainerStatuses = trimStatuses(p.Status.ContainerStatuses)
	t.Status.InitContainerStatuses = trimStatuses(p.Status.InitContainerStatuses)
	t.Status.EphemeralContainerStatuses = trimStatuses(p.Status.EphemeralContainerStatuses)
	return t, nil
}

func trimStatuses(in []v1.ContainerStatus) []v1.ContainerStatus {
	out := make([]v1.ContainerStatus, len(in))
	for i, s := range in {
		out[i] = v1.ContainerStatus{Name: s.Name, ContainerID: s.ContainerID}
	}
	return out
}

func (x *PodIndex) put(obj any) {
	p, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	info := PodInfo{Namespace: p.Namespace, Name: p.Name, Containers: map[string]string{}}
	for _, ss := range [][]v1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, s := range ss {
			if id := containerID(s.ContainerID); id != "" {
				info.Containers[id] = s.Name
			}
		}
	}
	x.mu.Lock()
	x.byUID[string(p.UID)] = info
	x.mu.Unlock()
}

func (x *PodIndex) remove(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	x.mu.Lock()
	delete(x.byUID, string(p.UID))
	x.mu.Unlock()
}

// containerID strips the runtime scheme of a status's container ID
// ("containerd://<id>", "cri-o://<id>", "docker://<id>").
func containerID(s string) string {
	if _, id, ok := strings.Cut(s, "://"); ok {
		return id
	}
	return s
}
