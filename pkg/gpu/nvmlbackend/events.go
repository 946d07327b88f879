package nvmlbackend

import (
	"context"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// watchedEvents are the NVML event types Tessera turns into gpu.Events.
const watchedEvents = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError

// maxConsecutiveWaitErrors bounds how often a broken event set is retried
// before WatchEvents gives up and lets its caller restart it.
const maxConsecutiveWaitErrors = 10

// WatchEvents registers every GPU for XID and ECC events and calls handle for
// each one until ctx is done. GPUs that do not support an event type are
// watched for the rest. A GPU that becomes lost is reported once as EventGPULost.
func (b *Backend) WatchEvents(ctx context.Context, handle func(gpu.Event)) error {
	logger := klog.FromContext(ctx).WithValues("backend", b.name)
	set, ret := b.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("creating nvml event set: %w", toError(ret))
	}
	defer func() {
		if ret := set.Free(); ret != nvml.SUCCESS {
			logger.Error(toError(ret), "Freeing nvml event set")
		}
	}()

	count, ret := b.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("counting gpus: %w", toError(ret))
	}
	uuids := make(map[string]int, count)
	handles := make([]nvml.Device, count)
	byIndex := make([]string, count)
	registered := 0
	for i := range count {
		d, err := b.device(i)
		if err != nil {
			logger.Error(err, "Not watching gpu events", "gpu", i)
			continue
		}
		uuid, ret := d.GetUUID()
		if ret != nvml.SUCCESS {
			logger.Error(toError(ret), "Not watching gpu events: reading uuid failed", "gpu", i)
			continue
		}
		uuids[uuid] = i
		handles[i] = d
		byIndex[i] = uuid
		supported, ret := d.GetSupportedEventTypes()
		if ret != nvml.SUCCESS {
			logger.Error(toError(ret), "Not watching gpu events: reading supported event types failed", "gpu", i, "uuid", uuid)
			continue
		}
		want := supported & watchedEvents
		if want == 0 {
			logger.Info("GPU supports none of the watched event types", "gpu", i, "uuid", uuid)
			continue
		}
		if ret := d.RegisterEvents(want, set); ret != nvml.SUCCESS {
			logger.Error(toError(ret), "Not watching gpu events: registration failed", "gpu", i, "uuid", uuid)
			continue
		}
		registered++
	}
	logger.V(2).Info("Watching gpu events", "gpus", registered)

	waitMs := uint32(max(b.eventWait.Milliseconds(), 1))
	lost := map[int]bool{}
	failures := 0
	for ctx.Err() == nil {
		if registered == 0 {
			<-ctx.Done()
			break
		}
		ed, ret := set.Wait(waitMs)
		switch ret {
		case nvml.SUCCESS:
			failures = 0
			idx := eventDevice(ed.Device, handles, uuids)
			if idx >= 0 {
				lost[idx] = false
			}
			handle(b.convertEvent(ed, idx, uuidAt(byIndex, idx)))
		case nvml.ERROR_TIMEOUT:
			failures = 0
		case nvml.ERROR_GPU_IS_LOST:
			failures = 0
			idx := eventDevice(ed.Device, handles, uuids)
			if !lost[idx] {
				lost[idx] = true
				handle(gpu.Event{Kind: gpu.EventGPULost, Time: b.clock.Now(), Index: idx, UUID: uuidAt(byIndex, idx), GPUInstanceID: -1, ComputeInstanceID: -1})
			}
		default:
			failures++
			if failures >= maxConsecutiveWaitErrors {
				return fmt.Errorf("waiting for gpu events failed %d times in a row: %w", failures, toError(ret))
			}
		}
	}
	return nil
}

func (b *Backend) convertEvent(ed nvml.EventData, idx int, uuid string) gpu.Event {
	e := gpu.Event{Time: b.clock.Now(), Index: idx, UUID: uuid, GPUInstanceID: -1, ComputeInstanceID: -1}
	switch {
	case ed.EventType&nvml.EventTypeXidCriticalError != 0:
		e.Kind = gpu.EventXID
		e.XID = ed.EventData
	case ed.EventType&nvml.EventTypeDoubleBitEccError != 0:
		e.Kind = gpu.EventECCDoubleBit
	default:
		e.Kind = gpu.EventECCSingleBit
	}
	if ed.GpuInstanceId != noInstance {
		e.GPUInstanceID = int(ed.GpuInstanceId)
	}
	if ed.ComputeInstanceId != noInstance {
		e.ComputeInstanceID = int(ed.ComputeInstanceId)
	}
	return e
}

// eventDevice finds the physical index of an event's device; -1 if unknown.
// Handles are compared first because a lost GPU no longer answers GetUUID.
func eventDevice(d nvml.Device, handles []nvml.Device, uuids map[string]int) int {
	if d == nil {
		return -1
	}
	for i, h := range handles {
		if h != nil && h == d {
			return i
		}
	}
	if uuid, ret := d.GetUUID(); ret == nvml.SUCCESS {
		if i, ok := uuids[uuid]; ok {
			return i
		}
	}
	if i, ret := d.GetIndex(); ret == nvml.SUCCESS {
		return i
	}
	return -1
}

// uuidAt returns the UUID recorded at registration; a lost GPU no longer answers GetUUID.
func uuidAt(byIndex []string, idx int) string {
	if idx < 0 || idx >= len(byIndex) {
		return ""
	}
	return byIndex[idx]
}
