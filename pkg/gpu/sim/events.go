package sim

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// eventSet is a simulated NVML event set. Events injected into the machine
// are queued on every set registered for their type on their GPU; Wait
// returns them in order.
type eventSet struct {
	*mock.EventSet
	m *Machine

	mu       sync.Mutex
	queue    []nvml.EventData
	notify   chan struct{} // signalled (capacity 1) when an event is queued
	done     chan struct{} // closed when the set is freed
	closeRet nvml.Return   // what Wait returns once done is closed
}

var _ nvml.EventSet = (*eventSet)(nil)

func newEventSet(m *Machine) *eventSet {
	s := &eventSet{EventSet: &mock.EventSet{}, m: m, notify: make(chan struct{}, 1), done: make(chan struct{})}
	stubMock(m, s.EventSet, -1, "EventSet")
	return s
}

func (s *eventSet) push(e nvml.EventData) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeRet != nvml.SUCCESS {
		return
	}
	s.queue = append(s.queue, e)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// close invalidates the set and wakes its waiters, which return ret.
func (s *eventSet) close(ret nvml.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeRet != nvml.SUCCESS {
		return
	}
	s.closeRet = ret
	s.queue = nil
	close(s.done)
}

// Wait returns the next event, waiting up to timeoutms milliseconds of real
// time; ERROR_TIMEOUT if none arrives.
func (s *eventSet) Wait(timeoutms uint32) (nvml.EventData, nvml.Return) {
	if r := s.m.lockedEnter(-1, "EventSetWait"); r != nvml.SUCCESS {
		return nvml.EventData{}, r
	}
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if s.closeRet != nvml.SUCCESS {
			r := s.closeRet
			s.mu.Unlock()
			return nvml.EventData{}, r
		}
		if len(s.queue) > 0 {
			e := s.queue[0]
			s.queue = s.queue[1:]
			if len(s.queue) > 0 {
				select { // keep other waiters going
				case s.notify <- struct{}{}:
				default:
				}
			}
			s.mu.Unlock()
			return e, nvml.SUCCESS
		}
		s.mu.Unlock()
		if timeout == nil {
			if timeoutms == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			t := time.NewTimer(time.Duration(timeoutms) * time.Millisecond)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-s.notify:
		case <-s.done:
		case <-timeout:
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
}

// Free frees the set; later calls on it return ERROR_INVALID_ARGUMENT.
func (s *eventSet) Free() nvml.Return {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.enter(-1, "EventSetFree"); r != nvml.SUCCESS {
		return r
	}
	if _, ok := m.eventSets[s]; !ok {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	delete(m.eventSets, s)
	for _, d := range m.devs {
		delete(d.eventSets, s)
	}
	s.close(nvml.ERROR_INVALID_ARGUMENT)
	return nvml.SUCCESS
}

// GetSupportedEventTypes returns the event types the GPU can report.
func (d *device) GetSupportedEventTypes() (uint64, nvml.Return) {
	r, unlock := d.begin("GetSupportedEventTypes")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.model.supportedEvents(), nvml.SUCCESS
}

// RegisterEvents adds event types of this GPU to set; ERROR_NOT_SUPPORTED (and
// nothing registered) if the GPU lacks any of them.
func (d *device) RegisterEvents(types uint64, set nvml.EventSet) nvml.Return {
	r, unlock := d.begin("RegisterEvents")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return r
	}
	s, ok := set.(*eventSet)
	if !ok || s.m != d.m {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if _, live := d.m.eventSets[s]; !live {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if types&^d.model.supportedEvents() != 0 {
		return nvml.ERROR_NOT_SUPPORTED
	}
	d.eventSets[s] |= types
	return nvml.SUCCESS
}

const noInstance = math.MaxUint32

// emit queues an event on every set registered for its type on this GPU.
// gi and ci locate MIG events; nil means the whole GPU. The caller holds m.mu.
func (d *device) emit(eventType uint64, data uint64, gi, ci *uint32) {
	e := nvml.EventData{Device: d, EventType: eventType, EventData: data, GpuInstanceId: noInstance, ComputeInstanceId: noInstance}
	if gi != nil {
		e.GpuInstanceId = *gi
	}
	if ci != nil {
		e.ComputeInstanceId = *ci
	}
	for s, types := range d.eventSets {
		if types&eventType != 0 {
			s.push(e)
		}
	}
}

// InjectXID reports XID xid for the whole GPU gpu to registered event sets.
func (m *Machine) InjectXID(gpu int, xid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	d.emit(nvml.EventTypeXidCriticalError, xid, nil, nil)
	return nil
}

// InjectMIGXID reports XID xid for compute instance ci of GPU instance gi on
// GPU gpu; both must exist.
func (m *Machine) InjectMIGXID(gpu, gi, ci int, xid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	inst, ok := d.gis[uint32(gi)]
	if !ok || gi < 0 {
		return fmt.Errorf("injecting XID %d on gpu %d: no GPU instance %d (existing: %v)", xid, gpu, gi, d.giIDs())
	}
	if _, ok := inst.cis[uint32(ci)]; !ok || ci < 0 {
		return fmt.Errorf("injecting XID %d on gpu %d instance %d: no compute instance %d", xid, gpu, gi, ci)
	}
	g, c := uint32(gi), uint32(ci)
	d.emit(nvml.EventTypeXidCriticalError, xid, &g, &c)
	return nil
}
