package scheduler

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	fwk "k8s.io/kube-scheduler/framework"
)

// Rooms: PreFilter names the nodes with room for a pod's GPUs when they are
// few.
//
// kube-scheduler filters nodes, from a rotating start, until it has found a
// share of them feasible (42 % of 1,000 nodes, 10 % of 5,000). Tessera packs:
// late in a run most nodes are full, kube-scheduler never finds its share and
// filters every node for every GPU pod, nearly all of them refused by
// NodeResourcesFit's count. (The default profile spreads pods and finds its
// share sooner.) Where the nodes with room are few, PreFilter names them
// (a PreFilterResult), as it names the nodes that advertise a rare resource
// (survey.preFilterResult): kube-scheduler then filters and scores those.
//
// The set is exact in what it leaves out, so that it changes no decision:
//   - "room" is what NodeResourcesFit counts — the NodeInfo's allocatable of
//     the resource less what its pods request (assumed pods included) — and
//     the pod's need is its request as kube-scheduler computes it; a node
//     left out is one counting refuses;
//   - kube-scheduler never considers a node a PreFilterResult leaves out for
//     preemption, so a node stays in the set when the pod could preempt a
//     pod there that holds the resource (a lower priority, and a preemption
//     policy that allows it): evicting lower-priority pods that hold none of
//     it cannot give the node room;
//   - no room anywhere names no set: the pod then meets counting's refusal
//     on every node, as without one, and preemption sees every node;
//   - gang members are never narrowed (their cycles place the whole gang).
//
// The rooms are kept from the NodeInfos, which change one node per
// placement: PreFilter walks the node list comparing each NodeInfo's
// generation with the one it last read, and re-reads only the nodes that
// changed. The walk is skipped while no set can be worth naming (below).
type rooms struct {
	byRes map[corev1.ResourceName]*roomIndex
	// calls counts PreFilter calls for GPU pods: each places at most one
	// pod, so a resource's rooms shrink by at most one node per call.
	calls uint64
}

// roomIndex is the rooms of one resource.
type roomIndex struct {
	// slots follow the node list PreFilter is given (kube-scheduler's
	// snapshot list, whose NodeInfos keep their addresses and whose order
	// changes only when a node comes or goes).
	slots []roomSlot
	// limit is the most nodes with room worth naming among len(slots).
	limit int
	sets  map[roomKey]*roomSet
}

// roomSlot is one node's room as its NodeInfo had it at generation gen.
type roomSlot struct {
	ni   fwk.NodeInfo
	name string
	gen  int64
	free int64
	// floor is the lowest priority among the node's pods that request the
	// resource (math.MaxInt32 when none): a pod of a higher priority that
	// may preempt could make room there.
	floor int32
}

// roomKey is what a pod's set depends on: how much of the resource it
// needs and the priority it can preempt below (math.MinInt32 when it never
// preempts).
type roomKey struct {
	need int64
	prio int32
}

// roomSet is the nodes one roomKey keeps: n of them, by name while they are
// worth naming (nil otherwise), and the PreFilter call until which the walk
// is skipped because n cannot fall to the limit before it.
type roomSet struct {
	n         int
	names     sets.Set[string]
	skipUntil uint64
}

// maxRoomKeys bounds the sets kept per resource (needs × priorities); past
// it they are dropped and rebuilt on demand.
const maxRoomKeys = 16

// keeps reports whether a node with the slot's room stays in key's set.
func (k roomKey) keeps(s *roomSlot) bool {
	return s.free >= k.need || s.floor < k.prio
}

// named returns the nodes with room for the pod's need of res, or nil for
// every node (see rooms), and how many nodes it leaves out. Call with the
// plugin's write lock held.
func (r *rooms) named(pod *corev1.Pod, res corev1.ResourceName, need int64, nodes []fwk.NodeInfo) (names sets.Set[string], left int) {
	if need <= 0 || len(nodes) == 0 {
		return nil, 0
	}
	r.calls++
	if pod.Spec.SchedulingGroup != nil {
		return nil, 0
	}
	key := roomKey{need: need, prio: corev1helpers.PodPriority(pod)}
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		key.prio = math.MinInt32
	}
	if r.byRes == nil {
		r.byRes = map[corev1.ResourceName]*roomIndex{}
	}
	x := r.byRes[res]
	if x == nil {
		x = &roomIndex{}
		r.byRes[res] = x
	}
	if s := x.sets[key]; s != nil && r.calls < s.skipUntil && len(x.slots) == len(nodes) {
		return nil, 0
	}
	x.walk(res, nodes)
	s := x.set(key)
	for _, s := range x.sets {
		if s.n > x.limit {
			// Rooms shrink by at most one node per call.
			s.skipUntil = r.calls + uint64(s.n-x.limit)
		}
	}
	if s.n == 0 || s.n > x.limit {
		return nil, 0
	}
	if s.names == nil {
		s.names = sets.New[string]()
		for i := range x.slots {
			if key.keeps(&x.slots[i]) {
				s.names.Insert(x.slots[i].name)
			}
		}
	}
	return s.names, len(x.slots) - s.n
}

// walk brings the slots up to the NodeInfos' generations, and every set
// with them.
func (x *roomIndex) walk(res corev1.ResourceName, nodes []fwk.NodeInfo) {
	if len(x.slots) != len(nodes) {
		x.reset(res, nodes)
		return
	}
	for i, ni := range nodes {
		s := &x.slots[i]
		if s.ni != ni {
			// A node came or went: the list was rebuilt.
			x.reset(res, nodes)
			return
		}
		if s.gen == ni.GetGeneration() {
			continue
		}
		now := readRoom(res, ni)
		for key, set := range x.sets {
			was, is := key.keeps(s), key.keeps(&now)
			switch {
			case was == is:
			case is:
				set.n++
				if set.names != nil {
					set.names.Insert(now.name)
				}
			default:
				set.n--
				if set.names != nil {
					set.names.Delete(now.name)
				}
			}
		}
		*s = now
	}
	for _, set := range x.sets {
		if set.n > x.limit {
			set.names = nil
		}
	}
}

// reset reads every node afresh and drops the sets.
func (x *roomIndex) reset(res corev1.ResourceName, nodes []fwk.NodeInfo) {
	x.slots = make([]roomSlot, len(nodes))
	x.limit = roomLimit(len(nodes))
	x.sets = nil
	for i, ni := range nodes {
		x.slots[i] = readRoom(res, ni)
	}
}

// set returns key's set, counting it from the slots when it is new.
func (x *roomIndex) set(key roomKey) *roomSet {
	if s := x.sets[key]; s != nil {
		return s
	}
	if x.sets == nil || len(x.sets) >= maxRoomKeys {
		x.sets = map[roomKey]*roomSet{}
	}
	s := &roomSet{}
	for i := range x.slots {
		if key.keeps(&x.slots[i]) {
			s.n++
		}
	}
	x.sets[key] = s
	return s
}

// readRoom reads a node's room of res as NodeResourcesFit counts it, and the
// lowest priority among the pods that request it.
func readRoom(res corev1.ResourceName, ni fwk.NodeInfo) roomSlot {
	s := roomSlot{ni: ni, gen: ni.GetGeneration(), floor: math.MaxInt32}
	if n := ni.Node(); n != nil {
		s.name = n.Name
	}
	s.free = ni.GetAllocatable().GetScalarResources()[res] - ni.GetRequested().GetScalarResources()[res]
	for _, pi := range ni.GetPods() {
		if pi.CalculateResource().Resource.GetScalarResources()[res] > 0 {
			s.floor = min(s.floor, corev1helpers.PodPriority(pi.GetPod()))
		}
	}
	return s
}

// roomLimit is the most nodes with room worth naming among n: at most half
// of them (as survey.preFilterResult), and no more than kube-scheduler looks
// for without a set — then it filters no more nodes and scores no more
// than it would have, and the nodes counting refuses are spared.
func roomLimit(n int) int {
	r := n / 2
	for r > 0 && feasibleToFind(r) > feasibleToFind(n) {
		r--
	}
	return r
}

// feasibleToFind is how many feasible nodes kube-scheduler looks for among
// n before it stops filtering, with percentageOfNodesToScore left to its
// default (adaptive). Hand-written: kube-scheduler's numFeasibleNodesToFind
// is unexported, and a plugin does not see the profile's percentage. With a
// fixed percentage p the set still never costs more (p·r ≤ p·n).
func feasibleToFind(n int) int {
	const minNodes, minPercent = 100, 5
	if n < minNodes {
		return n
	}
	percent := max(50-n/125, minPercent)
	return max(n*percent/100, minNodes)
}
