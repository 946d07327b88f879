package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// server is the gRPC device-plugin server of one resource.
type server struct {
	api.UnimplementedDevicePluginServer

	name   string
	socket string
	mgr    *Manager

	mu      sync.Mutex
	res     Resource
	healthy func(uuid string) bool
	// changed is closed and replaced whenever the device list or health changes,
	// waking every ListAndWatch stream.
	changed chan struct{}
	grpc    *grpc.Server
}

var _ api.DevicePluginServer = (*server)(nil)

func newServer(m *Manager, r Resource) *server {
	return &server{
		name:    r.Name,
		socket:  filepath.Join(m.cfg.PluginDir, socketName(r.Name)),
		mgr:     m,
		res:     r,
		healthy: m.healthy,
		changed: make(chan struct{}),
	}
}

// socketName derives the socket file of a resource: "tessera-nvidia.com_mig-1g.10gb.sock".
func socketName(resource string) string {
	return "tessera-" + strings.ReplaceAll(resource, "/", "_") + ".sock"
}

// update swaps the served resource and wakes ListAndWatch streams.
func (s *server) update(r Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res = r
	close(s.changed)
	s.changed = make(chan struct{})
}

// notify wakes ListAndWatch streams after a health change.
func (s *server) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *server) snapshot() (Resource, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res, s.changed
}

// start listens on the resource's socket and serves until stop.
func (s *server) start(ctx context.Context) error {
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", s.socket, err)
	}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		return fmt.Errorf("listening on %s for %s: %w", s.socket, s.name, err)
	}
	g := grpc.NewServer()
	api.RegisterDevicePluginServer(g, s)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	logger := klog.FromContext(ctx).WithValues("resource", s.name, "socket", s.socket)
	go func() {
		if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logger.Error(err, "Device plugin server stopped")
		}
	}()
	return waitForSocket(ctx, s.socket)
}

// stop ends the gRPC server and removes its socket.
func (s *server) stop() {
	s.mu.Lock()
	g := s.grpc
	s.grpc = nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
	_ = os.Remove(s.socket)
}

// register announces the server to the kubelet.
func (s *server) register(ctx context.Context, kubeletSocket string) error {
	ctx, cancel := context.WithTimeout(ctx, s.mgr.cfg.RegisterTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+kubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to kubelet at %s: %w", kubeletSocket, err)
	}
	defer conn.Close()
	_, err = api.NewRegistrationClient(conn).Register(ctx, &api.RegisterRequest{
		Version:      api.Version,
		Endpoint:     filepath.Base(s.socket),
		ResourceName: s.name,
		Options:      &api.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("registering %s with kubelet at %s: %w", s.name, kubeletSocket, err)
	}
	return nil
}

// GetDevicePluginOptions says preferred allocation is available.
func (s *server) GetDevicePluginOptions(context.Context, *api.Empty) (*api.DevicePluginOptions, error) {
	return &api.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch streams the device list, again after every change.
func (s *server) ListAndWatch(_ *api.Empty, stream grpc.ServerStreamingServer[api.ListAndWatchResponse]) error {
	for {
		res, changed := s.snapshot()
		if err := stream.Send(&api.ListAndWatchResponse{Devices: s.apiDevices(res)}); err != nil {
			return fmt.Errorf("sending %s devices: %w", s.name, err)
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (s *server) apiDevices(res Resource) []*api.Device {
	out := make([]*api.Device, 0, len(res.Devices))
	for _, d := range res.Devices {
		health := api.Healthy
		if s.healthy != nil && !s.healthy(d.UUID) {
			health = api.Unhealthy
		}
		ad := &api.Device{ID: d.ID, Health: health}
		if d.NUMA >= 0 {
			ad.Topology = &api.TopologyInfo{Nodes: []*api.NUMANode{{ID: int64(d.NUMA)}}}
		}
		out = append(out, ad)
	}
	return out
}

// Allocate hands the requested devices to each container.
func (s *server) Allocate(ctx context.Context, req *api.AllocateRequest) (*api.AllocateResponse, error) {
	res, _ := s.snapshot()
	resp := &api.AllocateResponse{}
	for i, cr := range req.ContainerRequests {
		c, err := s.mgr.allocateContainer(res, cr.DevicesIds)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Refusing allocation", "resource", s.name, "container", i, "devices", cr.DevicesIds)
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, c)
	}
	return resp, nil
}

// GetPreferredAllocation picks the devices gpu-scheduler planned for the pod
// being admitted when it can tell them (Config.Plans), otherwise its own
// with the shared allocator.
func (s *server) GetPreferredAllocation(ctx context.Context, req *api.PreferredAllocationRequest) (*api.PreferredAllocationResponse, error) {
	res, _ := s.snapshot()
	resp := &api.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids, err := s.mgr.choose(ctx, res, cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, int(cr.AllocationSize))
		if err != nil {
			return nil, fmt.Errorf("choosing %d %s from %d available: %w", cr.AllocationSize, s.name, len(cr.AvailableDeviceIDs), err)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &api.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// PreStartContainer is not requested in the options; it does nothing.
func (s *server) PreStartContainer(context.Context, *api.PreStartContainerRequest) (*api.PreStartContainerResponse, error) {
	return &api.PreStartContainerResponse{}, nil
}

// waitForSocket polls until a unix socket accepts connections.
func waitForSocket(ctx context.Context, path string) error {
	deadline := time.Now().Add(5 * time.Second)
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("socket %s does not accept connections: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
