package deviceplugin

import (
	"context"

	"github.com/tessera-gpu/tessera/pkg/kube"
)

// EventComponent is the source component of the agent's Events.
const EventComponent = "tessera-gpu-agent"

// NewEventRecorder returns a recorder of Events from the agent on nodeName,
// written through client (a *kube.Client), and the function that stops it.
func NewEventRecorder(ctx context.Context, client kube.EventWriter, nodeName string) (*kube.Recorder, func()) {
	return kube.NewEventRecorder(ctx, client, EventComponent, nodeName)
}
