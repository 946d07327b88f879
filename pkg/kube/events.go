package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/reference"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"
)

// EventWriter writes core/v1 Events; *Client is one.
type EventWriter interface {
	CreateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error)
	UpdateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error)
	PatchEvent(ctx context.Context, e *v1.Event, data []byte) (*v1.Event, error)
}

// The recorder's limits, client-go's event recorder's defaults.
const (
	// eventQueue is how many Events wait to be written; more are dropped.
	eventQueue = 1000
	// eventCacheSize bounds the Events remembered for counting repeats and
	// the rate limiters kept.
	eventCacheSize = 4096
	// eventBurst Events of one type about one object are written at once;
	// after that one more every eventRefill, and the rest are dropped.
	eventBurst  = 25
	eventRefill = 5 * time.Minute
	// A write that fails to reach the API server is retried until it is
	// written (or the recorder stops), eventRetryMin after the first failure,
	// doubling to eventRetry: an agent cut off from its API server catches
	// up on its Events when it returns. Events recorded meanwhile queue
	// behind it (up to eventQueue). client-go's recorder instead drops an
	// Event after 12 tries, 10 s apart.
	eventRetryMin = time.Second
	eventRetry    = 10 * time.Second
	// eventTimeout bounds each request.
	eventTimeout = 10 * time.Second
)

// Recorder records Events about objects, as client-go's record package
// does for controllers, without its broadcaster and its strategic-merge
// machinery (which link the OpenAPI models into the agent): an Event
// identical to one written before (same source, object, type, reason and
// message) patches that Event's count and last timestamp instead of creating
// another, and Events of one type about one object are rate limited (a
// burst of 25, then one every five minutes). Events are written in order by
// one goroutine; Event never blocks. Its methods are safe for concurrent use
// and match record.EventRecorder's Event and Eventf.
type Recorder struct {
	w      EventWriter
	source v1.EventSource
	clock  clock.Clock
	logger klog.Logger

	// lastName is the time suffix of the last Event name, in nanoseconds:
	// names are the object's name and a strictly increasing time.
	lastName atomic.Int64

	queue    chan *v1.Event
	stopping chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	// Only the writing goroutine uses these.
	written *lru.Cache // eventKey → writtenEvent
	limits  *lru.Cache // limitKey → *rate.Limiter
}

// writtenEvent is what the recorder remembers of an Event it wrote.
type writtenEvent struct {
	name, namespace string
	count           int32
	first           metav1.Time
}

// NewEventRecorder returns a recorder of Events from component on host,
// written through w, and the function that flushes and stops it. The
// recorder takes object references (*v1.ObjectReference) and objects of the
// Scheme (core/v1: Nodes, Pods). It stops when ctx is done too, after
// writing what is queued.
func NewEventRecorder(ctx context.Context, w EventWriter, component, host string) (*Recorder, func()) {
	return newEventRecorder(ctx, w, component, host, clock.RealClock{})
}

func newEventRecorder(ctx context.Context, w EventWriter, component, host string, clk clock.Clock) (*Recorder, func()) {
	r := newRecorder(ctx, w, component, host, clk)
	stop := func() { r.stopOnce.Do(func() { close(r.stopping) }) }
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-r.done:
		}
	}()
	go r.run(context.WithoutCancel(ctx))
	return r, func() {
		stop()
		<-r.done
	}
}

// newRecorder returns a recorder that does not run yet.
func newRecorder(ctx context.Context, w EventWriter, component, host string, clk clock.Clock) *Recorder {
	return &Recorder{
		w:        w,
		source:   v1.EventSource{Component: component, Host: host},
		clock:    clk,
		logger:   klog.FromContext(ctx).WithName("events"),
		queue:    make(chan *v1.Event, eventQueue),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		written:  lru.New(eventCacheSize),
		limits:   lru.New(eventCacheSize),
	}
}

// Event records an Event of eventtype (v1.EventTypeNormal or
// v1.EventTypeWarning) about object.
func (r *Recorder) Event(object runtime.Object, eventtype, reason, message string) {
	ref, err := reference.GetReference(Scheme, object)
	if err != nil {
		r.logger.Error(err, "Could not refer to the object of an Event; dropping it", "reason", reason, "message", message)
		return
	}
	if eventtype != v1.EventTypeNormal && eventtype != v1.EventTypeWarning {
		r.logger.Error(nil, "Unsupported event type; dropping the Event", "type", eventtype, "reason", reason, "message", message)
		return
	}
	now := metav1.NewTime(r.clock.Now())
	namespace := ref.Namespace
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	e := &v1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%v.%x", ref.Name, r.nameSuffix(now.UnixNano())),
			Namespace: namespace,
		},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             message,
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		Type:                eventtype,
		Source:              r.source,
		ReportingController: r.source.Component,
		ReportingInstance:   r.source.Host,
	}
	select {
	case r.queue <- e:
	default:
		r.logger.V(2).Info("Event queue full; dropping the Event", "object", klog.KRef(ref.Namespace, ref.Name), "reason", reason)
	}
}

// nameSuffix returns nanos, or one more than the last suffix when that is
// not earlier: two Events recorded in the same nanosecond (or by a clock
// that has not moved) get different names.
func (r *Recorder) nameSuffix(nanos int64) int64 {
	for {
		last := r.lastName.Load()
		n := max(nanos, last+1)
		if r.lastName.CompareAndSwap(last, n) {
			return n
		}
	}
}

// Eventf is Event with a message formatted by fmt.Sprintf.
func (r *Recorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(object, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

// run writes queued Events until the recorder stops, then writes what is
// still queued and returns.
func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	for {
		select {
		case e := <-r.queue:
			r.write(ctx, e)
			continue
		case <-r.stopping:
		}
		for {
			select {
			case e := <-r.queue:
				r.write(ctx, e)
			default:
				return
			}
		}
	}
}

// eventKey identifies identical Events; limitKey the Events one rate
// limiter admits.
func eventKey(e *v1.Event) string {
	return strings.Join([]string{limitKey(e), e.Reason, e.Message}, "\x00")
}

func limitKey(e *v1.Event) string {
	o := e.InvolvedObject
	return strings.Join([]string{e.Source.Component, e.Source.Host, o.Kind, o.Namespace, o.Name, string(o.UID), o.APIVersion, e.Type}, "\x00")
}

// write writes e, or patches the count of the identical Event written
// before, unless the rate limit drops it.
func (r *Recorder) write(ctx context.Context, e *v1.Event) {
	now := r.clock.Now()
	lk := limitKey(e)
	var lim *rate.Limiter
	if v, ok := r.limits.Get(lk); ok {
		lim = v.(*rate.Limiter)
	} else {
		lim = rate.NewLimiter(rate.Every(eventRefill), eventBurst)
		r.limits.Add(lk, lim)
	}
	if !lim.AllowN(now, 1) {
		r.logger.V(4).Info("Event rate limit reached; dropping the Event", "object", klog.KRef(e.InvolvedObject.Namespace, e.InvolvedObject.Name), "reason", e.Reason)
		return
	}
	key := eventKey(e)
	var patch []byte
	if v, ok := r.written.Get(key); ok {
		prev := v.(writtenEvent)
		e.Name, e.Namespace = prev.name, prev.namespace
		e.FirstTimestamp = prev.first
		e.Count = prev.count + 1
		var err error
		patch, err = json.Marshal(struct {
			Count         int32       `json:"count"`
			LastTimestamp metav1.Time `json:"lastTimestamp"`
			Message       string      `json:"message"`
		}{e.Count, e.LastTimestamp, e.Message})
		if err != nil {
			r.logger.Error(err, "Encoding an Event count patch; dropping the Event", "event", klog.KRef(e.Namespace, e.Name))
			return
		}
	}
	delay := eventRetryMin
	for try := 1; ; try++ {
		out, err := r.send(ctx, e, patch)
		if err == nil {
			if try > 1 {
				r.logger.Info("Event written after the API server could not be reached", "event", klog.KRef(e.Namespace, e.Name), "reason", e.Reason, "tries", try)
			}
			r.written.Add(key, writtenEvent{name: out.Name, namespace: out.Namespace, count: out.Count, first: out.FirstTimestamp})
			return
		}
		var status apierrors.APIStatus
		switch {
		case apierrors.IsAlreadyExists(err):
			r.logger.V(5).Info("Event already exists", "event", klog.KRef(e.Namespace, e.Name))
			return
		case errors.As(err, &status):
			// The API server refused it: give up.
			r.logger.Error(err, "Writing an Event failed; dropping it", "event", klog.KRef(e.Namespace, e.Name), "reason", e.Reason, "tries", try)
			return
		case try == 1:
			r.logger.Info("Writing an Event failed; retrying until the API server answers", "event", klog.KRef(e.Namespace, e.Name), "reason", e.Reason, "err", err.Error())
		default:
			r.logger.V(4).Info("Writing an Event failed again; retrying", "event", klog.KRef(e.Namespace, e.Name), "tries", try, "err", err.Error())
		}
		wait := delay
		delay = min(2*delay, eventRetry)
		select {
		case <-r.clock.After(wait):
		case <-r.stopping:
			r.logger.Error(err, "Writing an Event failed while stopping; dropping it", "event", klog.KRef(e.Namespace, e.Name))
			return
		}
	}
}

// send patches the count of the Event e repeats (patch is not nil), or
// creates e; a patch of an Event that has expired creates it again.
func (r *Recorder) send(ctx context.Context, e *v1.Event, patch []byte) (*v1.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	if patch != nil {
		out, err := r.w.PatchEvent(ctx, e, patch)
		if !apierrors.IsNotFound(err) {
			return out, err
		}
	}
	c := e.DeepCopy()
	c.ResourceVersion = ""
	return r.w.CreateEvent(ctx, c)
}
