package deviceplugin

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
)

// typedEventSink writes events through a typed client, like client-go's
// EventSinkImpl but without its deprecated wrapper.
type typedEventSink struct{ client kubernetes.Interface }

func (s *typedEventSink) Create(e *v1.Event) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Create(context.Background(), e, metav1.CreateOptions{})
}

func (s *typedEventSink) Update(e *v1.Event) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Update(context.Background(), e, metav1.UpdateOptions{})
}

func (s *typedEventSink) Patch(e *v1.Event, data []byte) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Patch(context.Background(), e.Name, "application/strategic-merge-patch+json", data, metav1.PatchOptions{})
}

// EventComponent is the source component of the agent's Events.
const EventComponent = "tessera-gpu-agent"

func eventScheme() *runtime.Scheme { return scheme.Scheme }

// NewEventRecorder returns a recorder of Events from the agent on nodeName,
// written through client, and the function that stops it.
func NewEventRecorder(ctx context.Context, client kubernetes.Interface, nodeName string) (record.EventRecorder, func()) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedEventSink{client: client})
	recorder := broadcaster.NewRecorder(eventScheme(), v1.EventSource{Component: EventComponent, Host: nodeName})
	return recorder, broadcaster.Shutdown
}
