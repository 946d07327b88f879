package reconcile

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
)

// eventSink writes events through a typed client.
type eventSink struct{ client kubernetes.Interface }

func (s *eventSink) Create(e *v1.Event) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Create(context.Background(), e, metav1.CreateOptions{})
}

func (s *eventSink) Update(e *v1.Event) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Update(context.Background(), e, metav1.UpdateOptions{})
}

func (s *eventSink) Patch(e *v1.Event, data []byte) (*v1.Event, error) {
	return s.client.CoreV1().Events(e.Namespace).Patch(context.Background(), e.Name,
		"application/strategic-merge-patch+json", data, metav1.PatchOptions{})
}

// newRecorder starts recording Node events; stop flushes and ends it.
func newRecorder(ctx context.Context, client kubernetes.Interface, nodeName string) (record.EventRecorder, func()) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&eventSink{client: client})
	return b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "tessera-gpu-agent", Host: nodeName}), b.Shutdown
}

// truncate keeps Event messages within the API's limit.
func truncate(s string) string {
	const limit = 1000
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
