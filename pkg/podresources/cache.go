package podresources

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/utils/clock"
)

// DefaultSocket is where the kubelet serves the PodResources API.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// Defaults applied by New to zero Options fields.
const (
	DefaultInterval     = 10 * time.Second
	DefaultTimeout      = 5 * time.Second
	DefaultMaxRecvBytes = 16 << 20 // gRPC's own default of 4 MiB is too small on busy MIG nodes
)

// ReplicaSeparator joins a device ID and a time-slicing replica number in the
// IDs Tessera advertises for shares: "<uuid>::<n>".
const ReplicaSeparator = "::"

// Holder is one container holding one device, as the kubelet reports it.
type Holder struct {
	Namespace, Pod, Container, Resource, DeviceID string
}

// Options configures a Cache. Zero fields take the defaults above.
type Options struct {
	Socket       string           // default DefaultSocket
	Interval     time.Duration    // refresh period, default 10s
	Timeout      time.Duration    // per List call, default 5s
	MaxRecvBytes int              // default 16 MiB
	Clock        clock.WithTicker // default the real clock
	// KubeletOptional says that no kubelet may run here (a standalone
	// agent): a missing socket is then an expected condition, logged at
	// info level with the reason, not as an error.
	KubeletOptional bool
}

// Status says whether the last refresh succeeded, why not, and when the view
// was last refreshed successfully (zero before the first success).
type Status struct {
	OK bool
	// Reason is the last error in words; Class its short class (one of the
	// Reason* constants), fit for a metric label.
	Reason  string
	Class   string
	Updated time.Time
}

// Cache is the cached PodResources view. All methods are safe for concurrent use.
type Cache struct {
	opts Options

	// refreshMu serialises Refresh calls and guards conn.
	refreshMu sync.Mutex
	conn      *grpc.ClientConn

	mu      sync.RWMutex
	pods    []PodRef
	all     []Holder
	byID    map[string][]Holder
	status  Status
	lastErr string // reason class of the last failure, for log de-duplication

	metrics *metrics
}

// New returns a Cache for o with defaults applied. It does no I/O; call
// Refresh or Run to fill it.
func New(o Options) *Cache {
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxRecvBytes <= 0 {
		o.MaxRecvBytes = DefaultMaxRecvBytes
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	c := &Cache{
		opts:   o,
		byID:   map[string][]Holder{},
		status: Status{Reason: "not refreshed yet", Class: ReasonNotRefreshed},
	}
	c.metrics = newMetrics(c)
	return c
}

// Socket returns the kubelet socket path the cache reads.
func (c *Cache) Socket() string { return c.opts.Socket }

// Run refreshes the view now and then every Interval until ctx is done, when
// it returns nil. A missing kubelet or failing List call is recorded in
// Status and logged when the reason changes; it never ends Run.
func (c *Cache) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("socket", c.opts.Socket)
	ticker := c.opts.Clock.NewTicker(c.opts.Interval)
	defer ticker.Stop()
	defer c.closeConn()
	for {
		c.refreshAndLog(ctx, logger)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
		}
	}
}

func (c *Cache) refreshAndLog(ctx context.Context, logger klog.Logger) {
	err := c.Refresh(ctx)
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	prev := c.lastErr
	if err != nil {
		c.lastErr = reasonClass(err)
	} else {
		c.lastErr = ""
	}
	cur := c.lastErr
	c.mu.Unlock()
	switch {
	case err != nil && cur != prev && c.opts.KubeletOptional && errors.Is(err, fs.ErrNotExist):
		logger.Info("Pod resources unavailable: no kubelet socket; metrics carry no pod labels until it appears", "reason", err.Error())
	case err != nil && cur != prev:
		logger.Error(err, "Pod resources unavailable; keeping the previous view")
	case err == nil && prev != "":
		logger.Info("Pod resources available again")
	}
}

// Refresh makes one List call now and replaces the view with its result. On
// error the previous view is kept, Status records the reason and the error is
// returned; a missing socket is reported as "kubelet socket <path> not found"
// wrapping fs.ErrNotExist.
func (c *Cache) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()

	start := c.opts.Clock.Now()
	resp, err := c.list(ctx)
	c.metrics.duration.Set(c.opts.Clock.Since(start).Seconds())
	if err != nil {
		c.closeConnLocked() // dial afresh next time: the kubelet may have restarted
		c.mu.Lock()
		c.status.OK = false
		c.status.Reason = err.Error()
		c.status.Class = reasonClass(err)
		c.mu.Unlock()
		c.metrics.errors.WithLabelValues(c.status.Class).Inc()
		return err
	}
	all, byID := index(resp)
	pods := listed(resp)
	c.mu.Lock()
	c.all, c.byID, c.pods = all, byID, pods
	c.status = Status{OK: true, Updated: c.opts.Clock.Now()}
	c.mu.Unlock()
	return nil
}

// socketError is a kubelet socket that cannot be used (missing or unreadable).
type socketError struct {
	socket string
	err    error
}

func (e *socketError) Error() string {
	if errors.Is(e.err, fs.ErrNotExist) {
		return fmt.Sprintf("kubelet socket %s not found", e.socket)
	}
	return fmt.Sprintf("kubelet socket %s: %v", e.socket, e.err)
}

func (e *socketError) Unwrap() error { return e.err }

func (c *Cache) list(ctx context.Context) (*podresourcesv1.ListPodResourcesResponse, error) {
	if _, err := os.Stat(c.opts.Socket); err != nil {
		return nil, &socketError{socket: c.opts.Socket, err: err}
	}
	if c.conn == nil {
		abs, err := filepath.Abs(c.opts.Socket)
		if err != nil {
			return nil, &socketError{socket: c.opts.Socket, err: err}
		}
		conn, err := grpc.NewClient("unix://"+abs,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxRecvBytes)))
		if err != nil {
			return nil, fmt.Errorf("list failed: creating client for kubelet socket %s: %w", c.opts.Socket, err)
		}
		c.conn = conn
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	resp, err := podresourcesv1.NewPodResourcesListerClient(c.conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list failed: kubelet socket %s: %w", c.opts.Socket, err)
	}
	return resp, nil
}

func (c *Cache) closeConn() {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.closeConnLocked()
}

func (c *Cache) closeConnLocked() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// index flattens a List response into sorted holders and an index by device
// ID and, for "<id>::<n>" replicas, by the base ID too.
func index(resp *podresourcesv1.ListPodResourcesResponse) ([]Holder, map[string][]Holder) {
	var all []Holder
	for _, p := range resp.GetPodResources() {
		for _, ctr := range p.GetContainers() {
			for _, d := range ctr.GetDevices() {
				for _, id := range d.GetDeviceIds() {
					all = append(all, Holder{
						Namespace: p.GetNamespace(),
						Pod:       p.GetName(),
						Container: ctr.GetName(),
						Resource:  d.GetResourceName(),
						DeviceID:  id,
					})
				}
			}
		}
	}
	slices.SortFunc(all, compareHolders)
	all = slices.Compact(all)
	byID := make(map[string][]Holder, len(all))
	for _, h := range all {
		byID[h.DeviceID] = append(byID[h.DeviceID], h)
		if base, _, ok := strings.Cut(h.DeviceID, ReplicaSeparator); ok && base != "" {
			byID[base] = append(byID[base], h)
		}
	}
	return all, byID
}

// PodRef names a pod the kubelet lists.
type PodRef struct{ Namespace, Name string }

// listed returns the pods of a List response, devices or not, sorted.
func listed(resp *podresourcesv1.ListPodResourcesResponse) []PodRef {
	out := make([]PodRef, 0, len(resp.GetPodResources()))
	for _, p := range resp.GetPodResources() {
		out = append(out, PodRef{Namespace: p.GetNamespace(), Name: p.GetName()})
	}
	slices.SortFunc(out, func(a, b PodRef) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Pods returns the pods the kubelet listed at the last refresh, with or
// without devices (a pod the kubelet is admitting is listed before it holds
// any), sorted by namespace and name.
func (c *Cache) Pods() []PodRef {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.pods)
}

func compareHolders(a, b Holder) int {
	return cmp.Or(
		cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Pod, b.Pod),
		cmp.Compare(a.Container, b.Container),
		cmp.Compare(a.Resource, b.Resource),
		cmp.Compare(a.DeviceID, b.DeviceID),
	)
}

// Holders returns, sorted, the holders of exactly deviceID and of any
// "deviceID::n" time-slicing replica of it. Nil when nobody holds it.
func (c *Cache) Holders(deviceID string) []Holder {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.byID[deviceID])
}

// All returns every holder in the view, sorted by namespace, pod, container,
// resource and device ID.
func (c *Cache) All() []Holder {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.all)
}

// Status reports the outcome of the last refresh.
func (c *Cache) Status() Status {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.status
}

// Reason classes, the values of tessera_podresources_errors_total's reason label.
const (
	ReasonSocketNotFound   = "socket_not_found"
	ReasonSocketError      = "socket_error"
	ReasonTimeout          = "timeout"
	ReasonUnavailable      = "unavailable"
	ReasonResponseTooLarge = "response_too_large"
	ReasonListFailed       = "list_failed"
	// ReasonNotRefreshed is the class before the first refresh.
	ReasonNotRefreshed = "not_refreshed_yet"
)

func reasonClass(err error) string {
	var se *socketError
	if errors.As(err, &se) {
		if errors.Is(err, fs.ErrNotExist) {
			return ReasonSocketNotFound
		}
		return ReasonSocketError
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	// grpc status errors are wrapped by list; status.Code unwraps them.
	switch status.Code(err) {
	case codes.DeadlineExceeded:
		return ReasonTimeout
	case codes.Unavailable:
		return ReasonUnavailable
	case codes.ResourceExhausted:
		return ReasonResponseTooLarge
	}
	return ReasonListFailed
}
