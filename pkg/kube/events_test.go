package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeEvents is an in-memory EventWriter that keeps Events by name, as the
// API server does, and fails the calls its fail hook says to.
type fakeEvents struct {
	mu      sync.Mutex
	events  map[string]*v1.Event
	calls   []string // "create name" or "patch name body"
	fail    func(call string) error
	created int
}

func newFakeEvents() *fakeEvents { return &fakeEvents{events: map[string]*v1.Event{}} }

func (f *fakeEvents) CreateEvent(_ context.Context, e *v1.Event) (*v1.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "create "+e.Name)
	if f.fail != nil {
		if err := f.fail("create"); err != nil {
			return nil, err
		}
	}
	if _, ok := f.events[e.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "events"}, e.Name)
	}
	f.created++
	c := e.DeepCopy()
	c.ResourceVersion = fmt.Sprint(f.created)
	f.events[e.Name] = c
	return c.DeepCopy(), nil
}

func (f *fakeEvents) UpdateEvent(context.Context, *v1.Event) (*v1.Event, error) {
	return nil, errors.New("the recorder does not update events")
}

func (f *fakeEvents) PatchEvent(_ context.Context, e *v1.Event, data []byte) (*v1.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "patch "+e.Name+" "+string(data))
	stored, ok := f.events[e.Name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "events"}, e.Name)
	}
	if err := json.Unmarshal(data, stored); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	return stored.DeepCopy(), nil
}

func (f *fakeEvents) list() []v1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []v1.Event
	for _, e := range f.events {
		out = append(out, *e)
	}
	return out
}

func (f *fakeEvents) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

var testNode = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-1", UID: "uid-1"}}

// writeEvent records one Event and writes it synchronously.
func writeEvent(t *testing.T, r *Recorder, eventtype, reason, message string) {
	t.Helper()
	r.Event(testNode, eventtype, reason, message)
	select {
	case e := <-r.queue:
		r.write(context.Background(), e)
	default:
		t.Fatalf("Event(%s, %s, %q) queued nothing", eventtype, reason, message)
	}
}

func TestRecorderCountsRepeats(t *testing.T) {
	w := newFakeEvents()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	r := newRecorder(context.Background(), w, "tessera-gpu-agent", "gpu-node-1", clk)

	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "gpu 0: xid 79")
	clk.Step(time.Minute)
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "gpu 0: xid 79")
	clk.Step(time.Minute)
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "gpu 0: xid 79")
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "gpu 1: xid 79")   // another message
	writeEvent(t, r, v1.EventTypeNormal, "FatalXID", "gpu 0: xid 79")    // another type
	writeEvent(t, r, v1.EventTypeWarning, "MIGApplied", "gpu 0: xid 79") // another reason

	evs := w.list()
	if len(evs) != 4 {
		t.Fatalf("got %d Events, want 4 (one counted three times): %+v", len(evs), evs)
	}
	var repeated *v1.Event
	for i := range evs {
		e := &evs[i]
		if e.InvolvedObject.Kind != "Node" || e.InvolvedObject.Name != "gpu-node-1" || e.InvolvedObject.APIVersion != "v1" {
			t.Errorf("Event %s refers to %+v, want Node v1 gpu-node-1", e.Name, e.InvolvedObject)
		}
		if e.Namespace != metav1.NamespaceDefault || e.Source.Component != "tessera-gpu-agent" || e.Source.Host != "gpu-node-1" ||
			e.ReportingController != "tessera-gpu-agent" || e.ReportingInstance != "gpu-node-1" {
			t.Errorf("Event %s: namespace %q, source %+v, reporting %s/%s", e.Name, e.Namespace, e.Source, e.ReportingController, e.ReportingInstance)
		}
		if e.Type == v1.EventTypeWarning && e.Reason == "FatalXID" && e.Message == "gpu 0: xid 79" {
			repeated = e
		} else if e.Count != 1 {
			t.Errorf("Event %s %s %q has count %d, want 1", e.Type, e.Reason, e.Message, e.Count)
		}
	}
	if repeated == nil {
		t.Fatal("the repeated Event is missing")
	}
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	if repeated.Count != 3 || !repeated.FirstTimestamp.Time.Equal(start) || !repeated.LastTimestamp.Time.Equal(start.Add(2*time.Minute)) {
		t.Errorf("repeated Event: count %d, first %s, last %s; want 3, %s, %s",
			repeated.Count, repeated.FirstTimestamp, repeated.LastTimestamp, start, start.Add(2*time.Minute))
	}
	if got := w.callCount(); got != 6 {
		t.Errorf("%d API calls, want 6 (4 creates, 2 patches): %v", got, w.calls)
	}
}

func TestRecorderRecreatesExpiredEvent(t *testing.T) {
	w := newFakeEvents()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	r := newRecorder(context.Background(), w, "c", "h", clk)
	writeEvent(t, r, v1.EventTypeNormal, "MIGApplied", "applied")
	w.mu.Lock()
	clear(w.events) // the API server's Event TTL
	w.mu.Unlock()
	writeEvent(t, r, v1.EventTypeNormal, "MIGApplied", "applied")
	evs := w.list()
	if len(evs) != 1 || evs[0].Count != 2 || evs[0].ResourceVersion == "" {
		t.Fatalf("after the Event expired: %+v, want it created again with count 2", evs)
	}
	writeEvent(t, r, v1.EventTypeNormal, "MIGApplied", "applied")
	if evs := w.list(); len(evs) != 1 || evs[0].Count != 3 {
		t.Fatalf("the re-created Event was not patched: %+v", evs)
	}
}

func TestRecorderRateLimit(t *testing.T) {
	w := newFakeEvents()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	r := newRecorder(context.Background(), w, "c", "h", clk)
	for i := range eventBurst + 5 {
		writeEvent(t, r, v1.EventTypeWarning, "FatalXID", fmt.Sprintf("xid %d", i))
	}
	if got := len(w.list()); got != eventBurst {
		t.Fatalf("%d Events of a burst of %d written, want %d", got, eventBurst+5, eventBurst)
	}
	// Another type about the same object has a limit of its own.
	writeEvent(t, r, v1.EventTypeNormal, "MIGApplied", "applied")
	if got := len(w.list()); got != eventBurst+1 {
		t.Fatalf("a Normal Event after the Warning burst: %d Events, want %d", got, eventBurst+1)
	}
	clk.Step(eventRefill - time.Second)
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "too early")
	clk.Step(time.Second)
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "refilled")
	writeEvent(t, r, v1.EventTypeWarning, "FatalXID", "and dropped")
	var msgs []string
	for _, e := range w.list() {
		if e.Message == "too early" || e.Message == "refilled" || e.Message == "and dropped" {
			msgs = append(msgs, e.Message)
		}
	}
	if len(msgs) != 1 || msgs[0] != "refilled" {
		t.Errorf("after %s the recorder wrote %v, want [refilled]", eventRefill, msgs)
	}
}

func TestRecorderDropsUnknownTypesAndObjects(t *testing.T) {
	w := newFakeEvents()
	r := newRecorder(context.Background(), w, "c", "h", clocktesting.NewFakeClock(time.Now()))
	r.Event(testNode, "Error", "Bad", "not a type")
	r.Event(nil, v1.EventTypeNormal, "Bad", "no object")
	if n := len(r.queue); n != 0 {
		t.Errorf("%d Events queued, want none", n)
	}
}

func TestRecorderRetriesUnreachableServer(t *testing.T) {
	w := newFakeEvents()
	fails := 1
	w.fail = func(string) error {
		if fails > 0 {
			fails--
			return errors.New("connection refused")
		}
		return nil
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	ctx := t.Context()
	r, stop := newEventRecorder(ctx, w, "c", "h", clk)
	defer stop()
	r.Eventf(testNode, v1.EventTypeWarning, "FatalXID", "gpu %d: xid %d", 3, 79)
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return clk.HasWaiters(), nil
	})
	if err != nil {
		t.Fatalf("the recorder never waited to retry: %v", err)
	}
	if len(w.list()) != 0 {
		t.Fatal("an Event was written although the server failed")
	}
	clk.Step(eventRetry)
	err = wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(w.list()) == 1, nil
	})
	if err != nil {
		t.Fatalf("the Event was not written on retry: %v (calls %v)", err, w.calls)
	}
	if e := w.list()[0]; e.Message != "gpu 3: xid 79" {
		t.Errorf("message %q, want %q", e.Message, "gpu 3: xid 79")
	}
}

// TestRecorderOutlastsAnOutage: an API server that cannot be reached for
// many retries delays an Event, and those queued behind it, without dropping
// them; the retries back off to eventRetry apart.
func TestRecorderOutlastsAnOutage(t *testing.T) {
	w := newFakeEvents()
	var mu sync.Mutex
	down := true
	w.fail = func(string) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("connection refused")
		}
		return nil
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	ctx := t.Context()
	r, stop := newEventRecorder(ctx, w, "c", "h", clk)
	defer stop()
	r.Eventf(testNode, v1.EventTypeWarning, "FatalXID", "first")
	r.Eventf(testNode, v1.EventTypeWarning, "FatalXID", "second")
	var waited time.Duration
	for try := 1; try <= 20; try++ {
		err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return clk.HasWaiters(), nil
		})
		if err != nil {
			t.Fatalf("try %d: the recorder never waited to retry: %v", try, err)
		}
		// Step a millisecond at a time up to the next retry: it fires no
		// earlier than its backoff says.
		want := min(eventRetryMin<<(try-1), eventRetry)
		if try > 5 {
			want = eventRetry
		}
		clk.Step(want - time.Millisecond)
		if !clk.HasWaiters() {
			t.Fatalf("try %d: retried before %s", try, want)
		}
		clk.Step(time.Millisecond)
		waited += want
	}
	if n := len(w.list()); n != 0 {
		t.Fatalf("%d Events written while the server was down", n)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		if clk.HasWaiters() {
			clk.Step(eventRetry)
		}
		return len(w.list()) == 2, nil
	})
	if err != nil {
		t.Fatalf("after an outage of %s: Events %+v, want both written: %v", waited, w.list(), err)
	}
}

func TestRecorderGivesUpOnRefusal(t *testing.T) {
	w := newFakeEvents()
	w.fail = func(string) error {
		return apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "x", errors.New("no RBAC"))
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	r := newRecorder(context.Background(), w, "c", "h", clk)
	writeEvent(t, r, v1.EventTypeNormal, "MIGApplied", "applied")
	if got := w.callCount(); got != 1 {
		t.Errorf("%d calls for a refused Event, want 1 (no retry): %v", got, w.calls)
	}
}

func TestRecorderStopFlushes(t *testing.T) {
	w := newFakeEvents()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	r, stop := newEventRecorder(ctx, w, "c", "h", clk)
	for i := range 10 {
		r.Event(testNode, v1.EventTypeNormal, "Queued", fmt.Sprint(i))
	}
	cancel() // a cancelled context stops it too; queued Events are still written
	stop()
	if got := len(w.list()); got != 10 {
		t.Errorf("%d of 10 queued Events written by stop, want 10", got)
	}
	r.Event(testNode, v1.EventTypeNormal, "Late", "after stop") // must not block or panic
	stop()                                                      // idempotent
}
