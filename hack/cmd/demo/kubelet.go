package main

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// podResources stands in for the kubelet's PodResources API on a unix
// socket: which container holds which device. The demo sets what it serves.
type podResources struct {
	podresourcesv1.UnimplementedPodResourcesListerServer

	mu   sync.Mutex
	pods []*podresourcesv1.PodResources
}

func servePodResources(socket string) (*podResources, func(), error) {
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, nil, fmt.Errorf("serving pod resources on %s: %w", socket, err)
	}
	pr := &podResources{}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, pr)
	go func() { _ = srv.Serve(l) }()
	return pr, srv.Stop, nil
}

// hold makes namespace/pod's container hold deviceIDs of resource; no IDs
// removes the pod (it finished).
func (p *podResources) hold(namespace, pod, container, resource string, deviceIDs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.pods[:0]
	for _, q := range p.pods {
		if q.Namespace != namespace || q.Name != pod {
			kept = append(kept, q)
		}
	}
	p.pods = kept
	if len(deviceIDs) > 0 {
		p.pods = append(p.pods, &podresourcesv1.PodResources{Namespace: namespace, Name: pod,
			Containers: []*podresourcesv1.ContainerResources{{Name: container,
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: resource, DeviceIds: deviceIDs}}}}})
	}
}

func (p *podResources) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &podresourcesv1.ListPodResourcesResponse{PodResources: append([]*podresourcesv1.PodResources(nil), p.pods...)}, nil
}
