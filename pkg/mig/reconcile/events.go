package reconcile

import "k8s.io/apimachinery/pkg/runtime"

// EventRecorder records Events about the Node and its pods; *kube.Recorder
// (one per agent process, shared by every part that records) is one.
type EventRecorder interface {
	Event(object runtime.Object, eventtype, reason, message string)
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// truncate keeps Event messages within the API's limit.
func truncate(s string) string {
	const limit = 1000
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
