package health

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/xid"
)

// State is a GPU's health (gpu.HealthState): Healthy or Unhealthy.
type State = gpu.HealthState

// States of a GPU.
const (
	Healthy   = gpu.Healthy
	Unhealthy = gpu.Unhealthy
)

// GPU is a physical GPU the Tracker follows.
type GPU struct {
	Index int
	UUID  string
	// MIGUUIDs are the UUIDs of the GPU's MIG devices; they share its health.
	MIGUUIDs []string
}

// Change is a GPU whose health changed.
type Change struct {
	Index   int
	UUID    string // the physical GPU's UUID
	Healthy bool
	Reason  string
}

// Status is a GPU's health at one moment (gpu.HealthStatus).
type Status = gpu.HealthStatus

// Tracker keeps the health of each GPU. It is safe for concurrent use.
type Tracker struct {
	mu     sync.Mutex
	policy Policy
	clock  clock.PassiveClock
	gpus   map[int]*gpuState
	byUUID map[string]*gpuState // GPU and MIG UUIDs
}

type gpuState struct {
	GPU
	healthy bool
	reason  string
	since   time.Time
	// lastFatal is when the last fatal event arrived; recovery counts from it.
	lastFatal time.Time
	// lost means the GPU stopped answering; only a reset recovers it.
	lost bool
}

// NewTracker returns a tracker with every GPU healthy. A zero
// policy.RecoveryPeriod means DefaultRecoveryPeriod. GPU indexes and UUIDs
// must be unique; a later duplicate replaces an earlier one.
func NewTracker(policy Policy, clk clock.PassiveClock, gpus []GPU) *Tracker {
	if policy.RecoveryPeriod <= 0 {
		policy.RecoveryPeriod = DefaultRecoveryPeriod
	}
	policy.IgnoredXIDs = maps.Clone(policy.IgnoredXIDs)
	policy.CriticalXIDs = maps.Clone(policy.CriticalXIDs)
	t := &Tracker{policy: policy, clock: clk}
	t.setGPUs(gpus)
	return t
}

// Policy returns the policy in force.
func (t *Tracker) Policy() Policy {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.policy
	p.IgnoredXIDs = maps.Clone(p.IgnoredXIDs)
	p.CriticalXIDs = maps.Clone(p.CriticalXIDs)
	return p
}

// SetGPUs replaces the GPUs followed, for example after a MIG layout change
// gave a GPU new MIG UUIDs. A GPU whose UUID was already followed keeps its
// state; a new one starts healthy; a GPU left out is forgotten.
func (t *Tracker) SetGPUs(gpus []GPU) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setGPUs(gpus)
}

func (t *Tracker) setGPUs(gpus []GPU) {
	old := map[string]*gpuState{}
	for _, st := range t.gpus {
		old[st.UUID] = st
	}
	now := t.clock.Now()
	t.gpus = make(map[int]*gpuState, len(gpus))
	t.byUUID = make(map[string]*gpuState, len(gpus))
	for _, g := range gpus {
		g.MIGUUIDs = slices.Clone(g.MIGUUIDs)
		st, ok := old[g.UUID]
		if ok && g.UUID != "" {
			st.GPU = g
		} else {
			st = &gpuState{GPU: g, healthy: true, since: now}
		}
		t.gpus[g.Index] = st
	}
	for _, st := range t.gpus {
		if st.UUID != "" {
			t.byUUID[st.UUID] = st
		}
		for _, u := range st.MIGUUIDs {
			t.byUUID[u] = st
		}
	}
}

// Observe applies a device event. An event for a GPU the tracker does not
// follow (an unknown UUID, or no UUID and an unknown index) changes nothing.
// The event's UUID, when set, identifies the GPU (a MIG UUID its parent);
// otherwise its index does. An XID or ECC event in a MIG instance applies to
// the whole GPU (see the package comment).
func (t *Tracker) Observe(e gpu.Event) []Change {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.lookup(e.Index, e.UUID)
	if st == nil {
		return nil
	}
	switch {
	case e.Kind == gpu.EventXID && e.XID == xid.FallenOffTheBus:
		// The GPU stopped answering: whatever the XID policy, it is lost
		// until a reset, as a GPU_IS_LOST error makes it.
		return t.lose(st, fmt.Sprintf("xid %d (%s)", e.XID, xid.Description(e.XID)))
	case e.Kind == gpu.EventXID:
		if !t.policy.IsFatalXID(e.XID) {
			return nil
		}
		reason := fmt.Sprintf("xid %d", e.XID)
		if d := xid.Description(e.XID); d != "" {
			reason += " (" + d + ")"
		}
		return t.fatal(st, reason+where(e))
	case e.Kind == gpu.EventECCDoubleBit:
		return t.fatal(st, "double-bit ecc error"+where(e))
	case e.Kind == gpu.EventGPULost:
		return t.lose(st, "gpu is lost")
	default: // single-bit ECC errors were corrected
		return nil
	}
}

// where says which MIG instance an event came from, if any.
func where(e gpu.Event) string {
	if e.GPUInstanceID < 0 {
		return ""
	}
	if e.ComputeInstanceID < 0 {
		return fmt.Sprintf(" in gpu instance %d", e.GPUInstanceID)
	}
	return fmt.Sprintf(" in gpu instance %d compute instance %d", e.GPUInstanceID, e.ComputeInstanceID)
}

// ObserveError applies an error a backend returned for a GPU: one that wraps
// gpu.ErrGPULost makes the GPU unhealthy until a reset. Other errors say
// nothing about health and change nothing.
func (t *Tracker) ObserveError(index int, err error) []Change {
	if !errors.Is(err, gpu.ErrGPULost) {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.gpus[index]
	if st == nil {
		return nil
	}
	return t.lose(st, err.Error())
}

// ObserveReset records a detected reset of a GPU (or a lost GPU answering
// again): an unhealthy GPU is healthy at once.
func (t *Tracker) ObserveReset(index int) []Change {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.gpus[index]
	if st == nil || st.healthy {
		return nil
	}
	st.lost = false
	return []Change{t.set(st, true, "gpu reset detected after "+st.reason)}
}

// Tick makes healthy every GPU whose last fatal event is at least
// RecoveryPeriod old, except lost GPUs, and returns the changes in index
// order. Call it on a timer; NextRecovery says when it next has work.
func (t *Tracker) Tick() []Change {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	var changes []Change
	for _, idx := range slices.Sorted(maps.Keys(t.gpus)) {
		st := t.gpus[idx]
		if st.healthy || st.lost || now.Sub(st.lastFatal) < t.policy.RecoveryPeriod {
			continue
		}
		changes = append(changes, t.set(st, true, fmt.Sprintf("no fatal event for %s after %s", t.policy.RecoveryPeriod, st.reason)))
	}
	return changes
}

// NextRecovery returns the earliest time at which Tick will make a GPU
// healthy again, and false when no GPU is waiting to recover with time.
func (t *Tracker) NextRecovery() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var next time.Time
	found := false
	for _, st := range t.gpus {
		if st.healthy || st.lost {
			continue
		}
		at := st.lastFatal.Add(t.policy.RecoveryPeriod)
		if !found || at.Before(next) {
			next, found = at, true
		}
	}
	return next, found
}

// Healthy reports the health of a GPU by its UUID or one of its MIG devices'
// UUIDs. A UUID the tracker does not follow is not healthy: a device nobody
// watches must not be handed out.
func (t *Tracker) Healthy(uuid string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.byUUID[uuid]
	return st != nil && st.healthy
}

// State returns a GPU's state, the reason it is in it and since when. For an
// index the tracker does not follow, state is "".
func (t *Tracker) State(index int) (state State, reason string, since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.gpus[index]
	if st == nil {
		return "", "", time.Time{}
	}
	return st.status().State, st.reason, st.since
}

// States returns every GPU's status in index order.
func (t *Tracker) States() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Status, 0, len(t.gpus))
	for _, idx := range slices.Sorted(maps.Keys(t.gpus)) {
		out = append(out, t.gpus[idx].status())
	}
	return out
}

func (st *gpuState) status() Status {
	s := Status{Index: st.Index, UUID: st.UUID, State: Unhealthy, Reason: st.reason, Since: st.since, Lost: st.lost}
	if st.healthy {
		s.State = Healthy
	}
	return s
}

// lookup finds an event's GPU; the caller holds t.mu.
func (t *Tracker) lookup(index int, uuid string) *gpuState {
	if uuid != "" {
		return t.byUUID[uuid]
	}
	return t.gpus[index]
}

// fatal records a fatal event: the GPU becomes (or stays) unhealthy and its
// recovery period starts again. A lost GPU stays lost.
func (t *Tracker) fatal(st *gpuState, reason string) []Change {
	st.lastFatal = t.clock.Now()
	if st.lost {
		return nil
	}
	if !st.healthy {
		st.reason = reason
		return nil
	}
	return []Change{t.set(st, false, reason)}
}

// lose records a lost GPU.
func (t *Tracker) lose(st *gpuState, reason string) []Change {
	st.lastFatal = t.clock.Now()
	st.lost = true
	if !st.healthy {
		st.reason = reason
		return nil
	}
	return []Change{t.set(st, false, reason)}
}

// set moves a GPU to a state; the caller holds t.mu.
func (t *Tracker) set(st *gpuState, healthy bool, reason string) Change {
	st.healthy, st.reason, st.since = healthy, reason, t.clock.Now()
	return Change{Index: st.Index, UUID: st.UUID, Healthy: healthy, Reason: reason}
}
