package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// nodeEntry is what the plugin knows of one node's GPUs. Its first fields
// are what Filter and PreScore read for every feasible node of every pod,
// kept together so that judging a node touches one or two cache lines of
// its entry (with 5,000 nodes, reaching the model for its heartbeat and
// modes was a third of PreScore's CPU).
type nodeEntry struct {
	// The fields PreScore reads for every node come first, in the entry's
	// first two cache lines (it ranks 500 nodes a pod at 5,000 nodes, and
	// by then each node's lines are cold: BenchmarkCycle5000Nodes).
	//
	// cache is the scoring node: the model with the assumed pods applied.
	cache *scoring.NodeCache
	// node is the scheduler's Node object this entry is indexed by in
	// cluster.byNode, if any.
	node *corev1.Node
	// heartbeat is the model's.
	heartbeat time.Time
	// syncedGen and syncedVer are the NodeInfo's generation and the
	// cache's version when syncFree last made them agree: while both
	// hold, they still do (see syncFree).
	syncedGen int64
	syncedVer uint64
	// cpuKnown is set once the free CPU and memory came from the
	// scheduler's NodeInfo (syncFree); a GPUNode says nothing of them.
	cpuKnown bool
	// modes are the first of the model's resources, by interned resource
	// ID (cluster.resID), nmodes of them.
	nmodes uint8
	modes  [4]entryMode
	// model is nil when the node's GPUNode is inconsistent (bad says why).
	model *nodeModel
	bad   error
}

// entryMode is how the node advertises the resource of an interned ID.
type entryMode struct {
	id   int32
	mode resMode
}

// mode says how the node advertises the pod's resource (by its interned
// ID, cycleData.resID); a pod without GPUs is KindNone on every node.
func (e *nodeEntry) mode(cd *cycleData) (resMode, bool) {
	if cd.d.Resource == "" {
		return resMode{kind: scoring.KindNone}, true
	}
	for i := range e.nmodes {
		if e.modes[i].id == cd.resID {
			return e.modes[i].mode, true
		}
	}
	if int(e.nmodes) == len(e.modes) {
		return e.model.mode(cd.d.Resource) // more than fit in the entry
	}
	return resMode{}, false
}

// assumedPod is a pod whose devices the scheduler planned and the agent has
// not reported yet: from Reserve (or, after a restart, from the pod's
// AnnotationDevices) until the report includes it or the pod ends.
type assumedPod struct {
	ref     podRef
	node    string
	req     *scoring.Request
	kind    scoring.Kind
	devices []string // expected device IDs, sorted
	// applied is true while the devices are taken in the node's cache.
	applied bool
	a       scoring.Assignment
}

// cluster is the plugin's view of the cluster's GPUs: a node entry per
// GPUNode and the assume cache. It is not safe for concurrent use; the
// plugin holds its lock around every call.
type cluster struct {
	scorer     *scoring.Scorer
	staleAfter time.Duration
	nodes      map[string]*nodeEntry
	assumed    map[types.UID]*assumedPod
	// gen counts the GPUNode changes a survey depends on (see
	// sameSurvey); surveys are PreFilter's per-resource surveys of the
	// cluster, valid for one gen, and surveyedAt is when the latest was
	// made.
	gen        uint64
	surveys    map[corev1.ResourceName]cachedSurvey
	surveyedAt time.Time
	// shared counts, per resource, the nodes that advertise it as
	// time-shared units (isShared, asked for every container of every pod).
	shared map[corev1.ResourceName]int
	// uncountable counts the nodes whose allocatable counting does not
	// decide a fit (nodeModel.uncountable); while it is zero PreFilter
	// lets counting alone filter the pods it can (countable).
	uncountable int
	// versions is the resourceVersion of the newest GPUNode applied or
	// deleted, by node (see Plugin.applyGPUNode).
	versions map[string]string
	// byNode finds entries by the scheduler's Node object, which kube-
	// scheduler's snapshot keeps (the same pointer) until the Node itself
	// changes: Filter and PreScore look up every feasible node for every
	// pod, and by name that cost most of PreScore's CPU (hashing and
	// comparing the names: 1.08 of 2.82 s in a 1,000-node scheduler_perf
	// profile). An entry holds at most one key (nodeEntry.node); a
	// replaced or removed entry takes its key along.
	byNode map[*corev1.Node]*nodeEntry
	// resIDs interns resource names (resID) for nodeEntry.mode.
	resIDs map[corev1.ResourceName]int32
	// entryBuf is entries' buffer; touched keeps its reads.
	entryBuf []*nodeEntry
	touched  uint64
}

func newCluster(scorer *scoring.Scorer, staleAfter time.Duration) *cluster {
	return &cluster{scorer: scorer, staleAfter: staleAfter, nodes: map[string]*nodeEntry{}, assumed: map[types.UID]*assumedPod{}, shared: map[corev1.ResourceName]int{}, versions: map[string]string{}, byNode: map[*corev1.Node]*nodeEntry{}, resIDs: map[corev1.ResourceName]int32{}}
}

// resID interns a resource name. Call with the write lock.
func (c *cluster) resID(r corev1.ResourceName) int32 {
	id, ok := c.resIDs[r]
	if !ok {
		id = int32(len(c.resIDs))
		c.resIDs[r] = id
	}
	return id
}

// entryOf returns the node's entry (nil if none), by the Node object when
// it is indexed, else by name. Safe under the read lock.
func (c *cluster) entryOf(n *corev1.Node) *nodeEntry {
	if e, ok := c.byNode[n]; ok {
		return e
	}
	return c.nodes[n.Name]
}

// entries looks up the entries of the nodes (entryOf), in a buffer reused
// from call to call, and reads what PreScore will read of each: the first
// line of its scoring node, its memo of r (scoring.NodeCache.Prefetch)
// and the NodeInfo's generation (syncFree).
// Call with the write lock.
//
// The reads are the point. At 5,000 nodes a node's lines are cold when
// PreScore reaches it (kube-scheduler's rotating start node brings each
// node back every ten pods, and the API server and the other goroutines
// run in between), and PreScore's loop is too long per node for the CPU to
// start the next node's loads while it waits on one node's: the misses
// came one after the other, about four per node. Each of the three short
// loops here has many independent loads in flight at once, so PreScore
// then finds the lines cached.
func (c *cluster) entries(nodes []fwk.NodeInfo, r *scoring.Request) []*nodeEntry {
	c.entryBuf = slices.Grow(c.entryBuf[:0], len(nodes))
	var sum uint64
	for _, ni := range nodes {
		c.entryBuf = append(c.entryBuf, c.entryOf(ni.Node()))
		sum += uint64(ni.GetGeneration()) // syncFree's
	}
	for _, e := range c.entryBuf {
		if e != nil && e.cache != nil {
			sum += e.cache.Version() + uint64(e.modes[0].id) // the entry's second line
		}
	}
	if r != nil {
		for _, e := range c.entryBuf {
			if e != nil && e.cache != nil {
				sum += e.cache.Prefetch(r)
			}
		}
	}
	c.touched = sum
	return c.entryBuf
}

// index makes n the Node object e is found by. Call with the write lock.
func (c *cluster) index(n *corev1.Node, e *nodeEntry) {
	if e.node == n {
		return
	}
	if e.node != nil {
		delete(c.byNode, e.node)
	}
	e.node = n
	c.byNode[n] = e
}

// unindex drops an entry's key (the entry is replaced or removed).
func (c *cluster) unindex(e *nodeEntry) {
	if e != nil && e.node != nil {
		delete(c.byNode, e.node)
		e.node = nil
	}
}

// freshEntry reports whether Tessera may judge the node of entry e: it has
// a consistent GPUNode whose heartbeat is at most staleAfter old.
func (c *cluster) freshEntry(e *nodeEntry, now time.Time) bool {
	return e != nil && e.cache != nil && now.Sub(e.heartbeat) <= c.staleAfter
}

// fresh returns the node's entry when Tessera may judge the node: it has a
// consistent GPUNode whose heartbeat is at most staleAfter old.
func (c *cluster) fresh(name string, now time.Time) (*nodeEntry, bool) {
	e := c.nodes[name]
	return e, c.freshEntry(e, now)
}

// isShared reports whether any node advertises r as time-shared units.
func (c *cluster) isShared(r corev1.ResourceName) bool { return c.shared[r] > 0 }

// count adds (sign 1) or removes (sign -1) a node model's shared resources,
// and whether counting decides its fits, to the cluster's counts.
func (c *cluster) count(m *nodeModel, sign int) {
	if m == nil {
		return
	}
	if m.uncountable != "" {
		c.uncountable += sign
	}
	for r, mode := range m.resources {
		if mode.kind == scoring.KindShare {
			c.shared[r] += sign
			if c.shared[r] <= 0 {
				delete(c.shared, r)
			}
		}
	}
}

// upsert takes a new version of a node's GPUNode: it rebuilds the node's
// model from the status, then reconciles the assume cache with the
// allocations the agent reports. A pod the report includes leaves the
// assume cache (the report is the truth from then on; devices other than
// the planned ones are a plan mismatch); a pod it does not include keeps its
// planned devices on top of the report.
func (c *cluster) upsert(logger klog.Logger, gn *v1alpha1.GPUNode) {
	name := gn.Name
	old := c.nodes[name]
	e := &nodeEntry{}
	defer func() {
		if !c.sameSurvey(old, e) {
			c.gen++
		}
	}()
	// The free CPU and memory are the scheduler's, not the GPUNode's: they
	// carry over, without the assumed pods' share, which apply takes again.
	var cpu, mem int64
	if old != nil {
		if old.cache != nil {
			st := old.cache.State()
			cpu, mem, e.cpuKnown = st.CPUFree, st.MemFree, old.cpuKnown
			for _, ap := range c.assumed {
				if ap.node == name && ap.applied {
					cpu, mem = cpu+ap.req.Demand.CPU, mem+ap.req.Demand.Memory
				}
			}
			c.scorer.RemoveNode(old.cache)
		}
		c.count(old.model, -1)
		c.unindex(old)
	}
	c.nodes[name] = e
	m, err := buildModel(gn)
	if err == nil {
		m.state.CPUFree, m.state.MemFree = cpu, mem
		e.cache, err = c.scorer.NewNode(m.state)
	}
	if err != nil {
		e.bad = err
		gpuNodesInconsistent.WithLabelValues(name).Inc()
		logger.Error(err, "GPUNode is inconsistent; Tessera treats the node as stale until it changes", "node", name)
		for _, ap := range c.assumed {
			if ap.node == name {
				ap.applied = false
			}
		}
		return
	}
	e.model, e.heartbeat = m, m.heartbeat
	for _, rm := range m.modes {
		if int(e.nmodes) == len(e.modes) {
			break
		}
		e.modes[e.nmodes] = entryMode{id: c.resID(rm.res), mode: rm.mode}
		e.nmodes++
	}
	c.count(m, 1)
	for uid, ap := range c.assumed {
		if ap.node != name {
			continue
		}
		ap.applied = false
		if got, ok := m.reportedFor(ap.ref); ok {
			if !slices.Equal(got, ap.devices) {
				planMismatches.WithLabelValues("devices_differ").Inc()
				logger.Info("Plan mismatch: the agent reports other devices than planned", "pod", klog.KRef(ap.ref.namespace, ap.ref.name), "node", name, "planned", ap.devices, "reported", got)
			}
			delete(c.assumed, uid)
			continue
		}
		if err := c.apply(e, ap); err != nil {
			planMismatches.WithLabelValues("devices_taken").Inc()
			logger.Info("Plan mismatch: the planned devices are reported held by another pod", "pod", klog.KRef(ap.ref.namespace, ap.ref.name), "node", name, "planned", ap.devices, "err", err)
			delete(c.assumed, uid)
		}
	}
}

// sameSurvey reports whether a new entry of a node leaves every survey as
// it was: both are consistent, the old one was fresh at every survey made
// (a survey counts a stale node as one Tessera cannot judge), and they
// agree on everything a survey reads — products, MIG profiles, advertised
// resources and each GPU's product, mode and health — none of which is a
// heartbeat or an allocation. The gpu-agent confirms an unchanged status
// every 30 s: at 5,000 nodes that is 166 GPUNode updates a second, and were
// each to void the surveys, PreFilter would walk every node for nearly
// every pod. A survey still ends when its first surveyed heartbeat turns
// stale (cachedSurvey.until), renewed since or not.
func (c *cluster) sameSurvey(old, e *nodeEntry) bool {
	if old == nil || old.model == nil || old.cache == nil || e.model == nil || e.cache == nil {
		return false
	}
	if c.surveyedAt.Sub(old.heartbeat) > c.staleAfter {
		return false
	}
	a, b := old.model, e.model
	if !slices.Equal(a.products, b.products) || !slices.Equal(a.profiles, b.profiles) || !maps.Equal(a.resources, b.resources) ||
		len(a.state.GPUs) != len(b.state.GPUs) {
		return false
	}
	for i := range a.state.GPUs {
		g, h := &a.state.GPUs[i], &b.state.GPUs[i]
		if g.Product != h.Product || g.Mode != h.Mode || g.ShareWhole != h.ShareWhole || g.Healthy != h.Healthy || g.ShareTotal != h.ShareTotal {
			return false
		}
	}
	return true
}

// remove forgets a node whose GPUNode was deleted; its assumed pods stay
// (unapplied) until a GPUNode returns or the pods end.
func (c *cluster) remove(name string) {
	e := c.nodes[name]
	if e == nil {
		return
	}
	c.gen++
	if e.cache != nil {
		c.scorer.RemoveNode(e.cache)
	}
	c.count(e.model, -1)
	c.unindex(e)
	delete(c.nodes, name)
	for _, ap := range c.assumed {
		if ap.node == name {
			ap.applied = false
		}
	}
}

// apply takes ap's devices in the node's cache, locating them by ID in the
// node's current model (positions move when a GPU disappears).
func (c *cluster) apply(e *nodeEntry, ap *assumedPod) error {
	a, err := e.model.assignment(ap.kind, ap.devices)
	if err != nil {
		return err
	}
	if err := e.cache.Assume(ap.req, a); err != nil {
		return err
	}
	ap.a, ap.applied = a, true
	return nil
}

// assume records a pod's planned devices (Reserve) and takes them.
func (c *cluster) assume(e *nodeEntry, ap *assumedPod) error {
	if old := c.assumed[ap.ref.uid]; old != nil {
		c.forget(old.ref.uid)
	}
	if err := e.cache.Assume(ap.req, ap.a); err != nil {
		return err
	}
	ap.applied = true
	c.assumed[ap.ref.uid] = ap
	return nil
}

// forget drops a pod from the assume cache, giving its devices back
// (Unreserve, a deleted or finished pod). It is idempotent.
func (c *cluster) forget(uid types.UID) {
	ap := c.assumed[uid]
	if ap == nil {
		return
	}
	delete(c.assumed, uid)
	if !ap.applied {
		return
	}
	if e := c.nodes[ap.node]; e != nil && e.cache != nil {
		_ = e.cache.Forget(ap.req, ap.a) // the cache holds them: applied says so
	}
}

// reportedFor returns the devices the agent reports for the pod.
func (m *nodeModel) reportedFor(ref podRef) ([]string, bool) {
	for r, devs := range m.reported {
		if r.uid != "" && ref.uid != "" {
			if r.uid == ref.uid {
				return devs, true
			}
			continue
		}
		if r.namespace == ref.namespace && r.name == ref.name {
			return devs, true
		}
	}
	return nil, false
}

// devices returns the device IDs of an assignment on the node: GPU UUIDs
// for whole GPUs and shares, the MIG UUID for a slice.
func (m *nodeModel) devices(kind scoring.Kind, a scoring.Assignment) []string {
	var out []string
	switch kind {
	case scoring.KindMIG:
		if len(a.GPUs) == 1 && a.Slice >= 0 && a.Slice < len(m.sliceIDs[a.GPUs[0]]) {
			out = append(out, m.sliceIDs[a.GPUs[0]][a.Slice])
		}
	default:
		for _, g := range a.GPUs {
			out = append(out, m.gpuIDs[g])
		}
	}
	slices.Sort(out)
	return out
}

// assignment locates device IDs in the node's model.
func (m *nodeModel) assignment(kind scoring.Kind, devices []string) (scoring.Assignment, error) {
	var a scoring.Assignment
	for _, id := range devices {
		found := false
		for g, gid := range m.gpuIDs {
			if kind == scoring.KindMIG {
				if j := slices.Index(m.sliceIDs[g], id); j >= 0 {
					a.GPUs, a.Slice, found = []int{g}, j, true
					a.Placement = m.state.GPUs[g].MIGSlices[j].Placement
					break
				}
				continue
			}
			if gid == id {
				a.GPUs, found = append(a.GPUs, g), true
				break
			}
		}
		if !found {
			return scoring.Assignment{}, fmt.Errorf("node %s has no device %s", m.name, id)
		}
	}
	slices.Sort(a.GPUs)
	return a, nil
}
