package kube

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

// EventWriter writes core/v1 Events; *Client is one.
type EventWriter interface {
	CreateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error)
	UpdateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error)
	PatchEvent(ctx context.Context, e *v1.Event, data []byte) (*v1.Event, error)
}

// EventSink adapts an EventWriter to client-go's record.EventSink, whose
// methods take no context: its requests are bounded by the client's timeout
// and the broadcaster's own retries, as client-go's EventSinkImpl's are.
type EventSink struct{ Writer EventWriter }

var _ record.EventSink = EventSink{}

// Create implements record.EventSink.
func (s EventSink) Create(e *v1.Event) (*v1.Event, error) {
	return s.Writer.CreateEvent(context.Background(), e)
}

// Update implements record.EventSink.
func (s EventSink) Update(e *v1.Event) (*v1.Event, error) {
	return s.Writer.UpdateEvent(context.Background(), e)
}

// Patch implements record.EventSink.
func (s EventSink) Patch(e *v1.Event, data []byte) (*v1.Event, error) {
	return s.Writer.PatchEvent(context.Background(), e, data)
}

// NewEventRecorder returns a recorder of Events from component on host,
// written through w, and the function that flushes and stops it. The
// recorder takes references to objects of the Scheme (core/v1: Nodes, Pods).
func NewEventRecorder(ctx context.Context, w EventWriter, component, host string) (record.EventRecorder, func()) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(EventSink{Writer: w})
	return b.NewRecorder(Scheme, v1.EventSource{Component: component, Host: host}), b.Shutdown
}
