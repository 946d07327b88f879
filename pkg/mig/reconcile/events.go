package reconcile

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/kube"
)

// newRecorder starts recording Node events; stop flushes and ends it.
func newRecorder(ctx context.Context, client kube.EventWriter, nodeName string) (*kube.Recorder, func()) {
	return kube.NewEventRecorder(ctx, client, deviceplugin.EventComponent, nodeName)
}

// truncate keeps Event messages within the API's limit.
func truncate(s string) string {
	const limit = 1000
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
