package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/xid"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultInterval = 10 * time.Second
	// DefaultTimeout bounds each collection stage (the backend sample and
	// every collector) when the interval is longer.
	DefaultTimeout = 5 * time.Second
)

// Source is the GPU backend the exporter reads: the machine model (devices,
// MIG devices, versions) and one telemetry pass over every device.
// gpu.Backend satisfies it.
type Source interface {
	Discover(ctx context.Context) (*gpu.Machine, error)
	Sample(ctx context.Context) (*gpu.Snapshot, error)
}

// PodLookup is the cached view of which container holds which device, as
// *podresources.Cache provides it. Holders returns the holders of exactly
// deviceID and of its "deviceID::n" time-slicing replicas; Status whether
// the view is current and, if not, why. The exporter calls them once per
// device and collection pass, never on the scrape path.
type PodLookup interface {
	Holders(deviceID string) []podresources.Holder
	Status() podresources.Status
}

var _ PodLookup = (*podresources.Cache)(nil)

// ProcessOwners resolves a host PID to the pod it runs in, as
// *procmap.Map does. The exporter calls it once per GPU process and
// collection pass, never on the scrape path.
type ProcessOwners interface {
	Owner(pid uint32) (procmap.Owner, error)
}

var _ ProcessOwners = (*procmap.Map)(nil)

// HealthLookup reports the health of every physical GPU, as
// the device plugin's health tracker (*health.Tracker) provides it.
type HealthLookup interface {
	States() []gpu.HealthStatus
}

// EventRecorder records Kubernetes Events; client-go's record.EventRecorder
// satisfies it.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Options configures an Exporter. Only Backend is required.
type Options struct {
	// Backend is sampled once per collection pass.
	Backend Source
	// Machine is the machine model to start from; nil means the first
	// collection pass calls Backend.Discover. Replace it with SetMachine after
	// a MIG layout change.
	Machine *gpu.Machine
	// Pods attributes devices to pods; nil means no pod labels and no pod
	// metrics (standalone use without a kubelet).
	Pods PodLookup
	// PodsMaxAge is how long a PodResources view that can no longer be
	// refreshed keeps labelling series; after that series lose their pod
	// labels until it recovers. Default 3 × Interval.
	PodsMaxAge time.Duration
	// Processes resolves GPU processes to pods for the per-pod usage series
	// (tessera_pod_gpu_*); nil omits them.
	Processes ProcessOwners
	// Health reports device health (tessera_gpu_health_state); nil omits it.
	Health HealthLookup
	// NodeName is the value of the Hostname and hostname labels; default
	// os.Hostname().
	NodeName string
	// Interval is the collection period of Run; default DefaultInterval.
	Interval time.Duration
	// Timeout bounds the backend sample and each collector in a pass; a stage
	// that runs longer is reported failed and the pass goes on without it.
	// Default the smaller of DefaultTimeout and Interval.
	Timeout time.Duration
	// MaxSampleAge is how long the last good backend sample is reused when a
	// new one fails or times out; after that device readings are absent.
	// Default 3 × Interval.
	MaxSampleAge time.Duration
	// Clock drives the interval, timeouts and timestamps; default the real clock.
	Clock clock.WithTicker
	// Recorder, when not nil, records a Warning Event on Node for every fatal XID.
	Recorder EventRecorder
	// Node is the object fatal-XID Events are recorded on; default
	// NodeReference(NodeName).
	Node *v1.ObjectReference
	// FatalXID decides which XIDs are fatal (Node Event, fatal="true" on the
	// XID counter); default every XID but the application ones
	// (xid.IsApplication), the health tracker's default policy. Pass the
	// health tracker's Policy().IsFatalXID so both agree.
	FatalXID func(xid uint64) bool
}

// NodeReference returns the reference the kubelet uses for its own Node
// Events, so that `kubectl describe node` lists them.
func NodeReference(nodeName string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Node", Name: nodeName, UID: types.UID(nodeName)}
}

// Exporter collects GPU telemetry on an interval into an immutable snapshot
// and serves it. All methods are safe for concurrent use.
type Exporter struct {
	opts       Options
	collectors []collector

	machine atomic.Pointer[gpu.Machine]
	snap    atomic.Pointer[snapshot]
	// passes counts the snapshots published, for readiness.
	passes atomic.Int64

	// refreshMu serialises Refresh and guards the fields below it.
	refreshMu    sync.Mutex
	lastSample   *gpu.Snapshot
	lastSampleAt time.Time
	sampling     chan result[*gpu.Snapshot] // set while a Sample call is in flight
	discovering  chan result[*gpu.Machine]  // set while a Discover call is in flight
	sampleFailed bool                       // the last pass's sample failed (logged once per failure run)

	events eventState

	// collectorDone, when set (tests), is called after a collector's result
	// is recorded (or dropped, past the deadline).
	collectorDone func(name string)
}

// New returns an Exporter for o with defaults applied. It does no I/O: call
// Refresh or Run to collect. Until the first pass /metrics serves an empty
// snapshot.
func New(o Options) (*Exporter, error) {
	if o.Backend == nil {
		return nil, errors.New("telemetry options: Backend is required")
	}
	if o.Interval < 0 || o.Timeout < 0 || o.MaxSampleAge < 0 || o.PodsMaxAge < 0 {
		return nil, fmt.Errorf("telemetry options: durations must be >= 0 (interval %s, timeout %s, max sample age %s, pods max age %s)",
			o.Interval, o.Timeout, o.MaxSampleAge, o.PodsMaxAge)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout == 0 {
		o.Timeout = min(DefaultTimeout, o.Interval)
	}
	if o.MaxSampleAge == 0 {
		o.MaxSampleAge = 3 * o.Interval
	}
	if o.PodsMaxAge == 0 {
		o.PodsMaxAge = 3 * o.Interval
	}
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("telemetry options: NodeName is empty and the hostname cannot be read: %w", err)
		}
		o.NodeName = h
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Node == nil {
		o.Node = NodeReference(o.NodeName)
	}
	if o.FatalXID == nil {
		o.FatalXID = func(x uint64) bool { return !xid.IsApplication(x) }
	}
	e := &Exporter{opts: o, collectors: allCollectors(o)}
	e.events.init()
	if o.Machine != nil {
		e.machine.Store(o.Machine)
	}
	e.snap.Store(emptySnapshot())
	return e, nil
}

// SetMachine replaces the machine model, for example after a MIG layout
// change created new MIG devices. It takes effect at the next pass.
func (e *Exporter) SetMachine(m *gpu.Machine) { e.machine.Store(m) }

// Run collects now and then every Interval until ctx is done, when it
// returns nil.
func (e *Exporter) Run(ctx context.Context) error {
	ticker := e.opts.Clock.NewTicker(e.opts.Interval)
	defer ticker.Stop()
	for {
		e.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
		}
	}
}

// Refresh runs one collection pass and publishes its snapshot. It returns
// within about three times Timeout (discovery, sample, collectors) even if
// the backend hangs: the stages that did not finish are reported failed
// (tessera_collector_success 0) and /metrics keeps serving meanwhile.
func (e *Exporter) Refresh(ctx context.Context) {
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	logger := klog.FromContext(ctx)
	now := e.opts.Clock.Now()

	var stages []stageResult
	m := e.machine.Load()
	if m == nil {
		start := e.opts.Clock.Now()
		d, err := await(ctx, e, &e.discovering, "discovering gpus", e.opts.Backend.Discover)
		stages = append(stages, stageResult{name: "discover", duration: e.opts.Clock.Since(start), err: err})
		if err != nil {
			logger.Error(err, "Discovering GPUs for telemetry failed; retrying next pass")
		} else {
			// Keep a machine someone set meanwhile.
			e.machine.CompareAndSwap(nil, d)
			m = e.machine.Load()
		}
	}

	var sample *gpu.Snapshot
	if m != nil {
		start := e.opts.Clock.Now()
		s, err := await(ctx, e, &e.sampling, "sampling gpu telemetry", e.opts.Backend.Sample)
		stages = append(stages, stageResult{name: "sample", duration: e.opts.Clock.Since(start), err: err})
		// Log the first failure of a run as an error, repeats at V(4)
		// (logr writes Error whatever the verbosity).
		failLog := func(msg string, kv ...any) {
			if e.sampleFailed {
				logger.V(4).Info(msg, append(kv, "err", err)...)
				return
			}
			logger.Error(err, msg, kv...)
		}
		switch {
		case err == nil:
			if e.sampleFailed {
				logger.Info("Sampling GPU telemetry works again")
			}
			e.lastSample, e.lastSampleAt = s, e.opts.Clock.Now()
			sample = s
		case e.lastSample != nil && now.Sub(e.lastSampleAt) <= e.opts.MaxSampleAge:
			failLog("Sampling GPU telemetry failed; reusing the last sample", "age", now.Sub(e.lastSampleAt))
			sample = e.lastSample
		default:
			failLog("Sampling GPU telemetry failed; device readings are absent")
		}
		e.sampleFailed = err != nil
	}

	p := e.newPass(now, m, sample)
	b := newBuilder()
	stages = append(stages, e.runCollectors(ctx, p, b)...)
	for _, s := range stages {
		if s.err != nil && s.name != "discover" && s.name != "sample" {
			logger.Error(s.err, "Telemetry collector failed", "collector", s.name)
		}
	}
	addStageMetrics(b, stages)
	b.gauge(&snapshotTimestampDesc, nil, float64(now.UnixNano())/1e9)
	snap, err := b.encode(now, e.snap.Load())
	if err != nil {
		// Only a bug (an invalid family) gets here; keep serving the last snapshot.
		logger.Error(err, "Encoding the telemetry snapshot failed; serving the previous one")
		return
	}
	e.snap.Store(snap)
	e.passes.Add(1)
}

// Collected reports whether a collection pass has published a snapshot
// (the first one is taken when Run starts); until then /metrics serves an
// empty one.
func (e *Exporter) Collected() bool { return e.passes.Load() > 0 }

type result[T any] struct {
	val T
	err error
}

// errStillRunning says a stage did not finish within Timeout.
var errStillRunning = errors.New("still running after the collection timeout")

// await returns the result of call, waiting at most Timeout. A call that
// takes longer keeps running in its goroutine and *pending remembers it: the
// next pass collects its result instead of starting another, so a hung
// backend holds one goroutine, not one per pass. The caller holds refreshMu.
func await[T comparable](ctx context.Context, e *Exporter, pending *chan result[T], what string, call func(context.Context) (T, error)) (T, error) {
	var zero T
	if *pending == nil {
		ch := make(chan result[T], 1)
		*pending = ch
		go func() {
			v, err := call(ctx)
			ch <- result[T]{val: v, err: err}
		}()
	}
	timer := e.opts.Clock.NewTimer(e.opts.Timeout)
	defer timer.Stop()
	select {
	case r := <-*pending:
		*pending = nil
		if r.err != nil {
			return zero, fmt.Errorf("%s: %w", what, r.err)
		}
		if r.val == zero {
			return zero, fmt.Errorf("%s: the backend returned nothing", what)
		}
		return r.val, nil
	case <-timer.C():
		return zero, fmt.Errorf("%s: %w (%s)", what, errStillRunning, e.opts.Timeout)
	case <-ctx.Done():
		return zero, fmt.Errorf("%s: %w", what, ctx.Err())
	}
}
