package deviceplugin

import (
	"context"
	"slices"
	"time"

	"k8s.io/klog/v2"
)

// Plan is the scheduler's plan for a pod bound to this node that still
// waits for devices (v1alpha1.AnnotationDevices), as GetPreferredAllocation
// needs it.
type Plan struct {
	// Pod is namespace/name, for logs.
	Pod string
	// Created is the pod's creation time: a kubelet admits the pods it
	// receives together oldest first.
	Created time.Time
	// Devices are the planned GPU and MIG UUIDs.
	Devices []string
	// Want is the number of devices the pod's containers ask for, and Held
	// those the kubelet has allocated to it so far, by resource.
	Want, Held map[string]int64
	// Admitting is true when the kubelet already lists the pod (PodResources):
	// a kubelet lists the pod it is admitting, and not the pods it has not
	// taken up yet.
	Admitting bool
}

// PlanSource lists the plans of the pods bound to this node that still wait
// for devices (pkg/deviceplugin/plans). It is asked once per preferred
// allocation and must answer within the context's deadline.
type PlanSource interface {
	PendingPlans(ctx context.Context) ([]Plan, error)
}

// Where a preferred allocation came from, the source label of
// tessera_device_plugin_preferred_allocations_total.
const (
	PreferredFromPlan = "plan"
	PreferredOwn      = "own"
)

// planTimeout bounds the look-up of plans in a GetPreferredAllocation call;
// the kubelet waits for the answer while it admits the pod.
const planTimeout = 2 * time.Second

// choose answers one container's preferred allocation: the devices the
// scheduler planned for the pod being admitted, when Config.Plans finds
// exactly one plan that fits the request, or else the allocator's own choice.
func (m *Manager) choose(ctx context.Context, res Resource, available, mustInclude []string, size int) ([]string, error) {
	if m.cfg.Plans != nil {
		if ids, pod, ok := m.fromPlan(ctx, res, available, mustInclude, size); ok {
			m.countPreferred(PreferredFromPlan)
			klog.FromContext(ctx).V(2).Info("Preferred allocation follows the scheduler's plan", "resource", res.Name, "pod", pod, "devices", ids)
			return ids, nil
		}
	}
	ids, err := m.preferred(res, available, mustInclude, size)
	if err == nil {
		m.countPreferred(PreferredOwn)
	}
	return ids, err
}

// fromPlan finds the plan of the pod being admitted among the pending plans
// and chooses size devices within it. A plan fits when the pod still wants
// size devices of res, at least size of the available ones are planned for
// it (a share plan names its GPU: any of its free units) and the devices
// the kubelet must include are planned too. Of the fitting plans, those of
// pods the kubelet lists come first (the pod under admission), then the
// oldest; two candidates that cannot be told apart (same creation second,
// other devices) make the answer ambiguous, and so does a failed look-up:
// then ok is false and the allocator chooses on its own.
func (m *Manager) fromPlan(ctx context.Context, res Resource, available, mustInclude []string, size int) (ids []string, pod string, ok bool) {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, planTimeout)
	defer cancel()
	plans, err := m.cfg.Plans.PendingPlans(ctx)
	if err != nil {
		logger.V(2).Info("Cannot read the scheduler's plans; choosing devices without them", "resource", res.Name, "err", err)
		return nil, "", false
	}
	uuidOf := make(map[string]string, len(res.Devices))
	for _, d := range res.Devices {
		uuidOf[d.ID] = d.UUID
	}
	type candidate struct {
		p          *Plan
		restricted []string
	}
	var cands []candidate
	for i := range plans {
		p := &plans[i]
		if want := p.Want[res.Name]; want == 0 || p.Held[res.Name]+int64(size) > want {
			continue
		}
		var restricted []string
		for _, id := range available {
			if slices.Contains(p.Devices, uuidOf[id]) {
				restricted = append(restricted, id)
			}
		}
		fits := len(restricted) >= size
		for _, id := range mustInclude {
			fits = fits && slices.Contains(restricted, id)
		}
		if fits {
			slices.Sort(restricted)
			cands = append(cands, candidate{p, restricted})
		}
	}
	if slices.ContainsFunc(cands, func(c candidate) bool { return c.p.Admitting }) {
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return !c.p.Admitting })
	}
	if len(cands) == 0 {
		return nil, "", false
	}
	slices.SortStableFunc(cands, func(a, b candidate) int { return a.p.Created.Compare(b.p.Created) })
	first := cands[0]
	for _, c := range cands[1:] {
		if c.p.Created.Equal(first.p.Created) && !slices.Equal(c.restricted, first.restricted) {
			logger.V(2).Info("Several pending pods' plans fit this allocation; choosing devices without them", "resource", res.Name, "pods", []string{first.p.Pod, c.p.Pod})
			return nil, "", false
		}
	}
	ids, err = m.preferred(res, first.restricted, mustInclude, size)
	if err != nil {
		logger.V(2).Info("The scheduler's plan does not fit the allocator; choosing devices without it", "resource", res.Name, "pod", first.p.Pod, "err", err)
		return nil, "", false
	}
	return ids, first.p.Pod, true
}

func (m *Manager) countPreferred(source string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.preferredBy == nil {
		m.preferredBy = map[string]uint64{}
	}
	m.preferredBy[source]++
}

// PreferredAllocations returns how many preferred allocations followed the
// scheduler's plan (PreferredFromPlan) and how many the allocator chose on
// its own (PreferredOwn).
func (m *Manager) PreferredAllocations() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]uint64{PreferredFromPlan: m.preferredBy[PreferredFromPlan], PreferredOwn: m.preferredBy[PreferredOwn]}
}
