package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Name is the plugin's name in a KubeSchedulerConfiguration.
const Name = "TesseraGPU"

// GPUNodeEvent is the cluster event resource of GPUNodes
// (<plural>.<version>.<group>): kube-scheduler watches it through a dynamic
// informer to requeue pods this plugin rejected.
const GPUNodeEvent fwk.EventResource = v1alpha1.Resource + ".v1alpha1." + v1alpha1.GroupName

// NeutralScore is the score of a node Tessera cannot judge (no GPUNode, a
// stale heartbeat, an inconsistent status): the middle of the range, so
// that such a node neither wins nor loses by Tessera's score.
const NeutralScore = fwk.MaxScore / 2

// Plugin is Tessera's kube-scheduler plugin. Every decision is pkg/scoring's;
// the plugin reads pods and GPUNodes into its model, keeps the assume cache
// and answers the framework. Its state is guarded by one read-write mutex:
// the scorer is not safe for concurrent use, and Filter runs in parallel,
// so Filter answers from the node's cached verdict under the read lock and
// takes the write lock only to compute one.
type Plugin struct {
	handle fwk.Handle
	args   Args
	clock  clock.PassiveClock

	mu sync.RWMutex
	c  *cluster
	// rooms are the nodes' room for the resources PreFilter names no
	// nodes for by advertising (see rooms); under mu.
	rooms rooms

	// nodeInfo reads a node from the cycle's snapshot (the handle's
	// SnapshotSharedLister): Reserve takes the chosen node's free CPU and
	// memory from it when neither Filter nor PreScore ran on the node.
	nodeInfo func(name string) (fwk.NodeInfo, error)

	// bindOnce decides binds: whether this profile runs Tessera's Bind
	// before any other binder (see bindsPods).
	bindOnce sync.Once
	binds    bool
}

var (
	_ fwk.PreFilterPlugin   = (*Plugin)(nil)
	_ fwk.FilterPlugin      = (*Plugin)(nil)
	_ fwk.PostFilterPlugin  = (*Plugin)(nil)
	_ fwk.PreScorePlugin    = (*Plugin)(nil)
	_ fwk.ScorePlugin       = (*Plugin)(nil)
	_ fwk.ScoreExtensions   = (*Plugin)(nil)
	_ fwk.ReservePlugin     = (*Plugin)(nil)
	_ fwk.PreBindPlugin     = (*Plugin)(nil)
	_ fwk.BindPlugin        = (*Plugin)(nil)
	_ fwk.EnqueueExtensions = (*Plugin)(nil)
	_ fwk.SignPlugin        = (*Plugin)(nil)
)

// New is the plugin factory for app.WithPlugin: it decodes and validates
// the arguments (invalid ones stop the scheduler with a message naming the
// field), starts an informer on GPUNodes and one on pods, and waits for the
// GPUNodes to be listed once.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	args, err := DecodeArgs(obj)
	if err != nil {
		return nil, err
	}
	p, err := newPlugin(args, h, clock.RealClock{})
	if err != nil {
		return nil, err
	}
	gauges.use(p)
	if h.KubeConfig() == nil {
		return nil, errors.New("creating the gpunode informer: the scheduler has no kubeconfig")
	}
	gc, err := client.NewForConfig(h.KubeConfig())
	if err != nil {
		return nil, err
	}
	inf := cache.NewSharedIndexInformer(gc.ListWatch(), &v1alpha1.GPUNode{}, 0, cache.Indexers{})
	reg, err := inf.AddEventHandler(p.gpuNodeHandler(klog.FromContext(ctx)))
	if err != nil {
		return nil, fmt.Errorf("watching gpunodes: %w", err)
	}
	if h.SharedInformerFactory() != nil {
		if _, err := h.SharedInformerFactory().Core().V1().Pods().Informer().AddEventHandler(p.podHandler(klog.FromContext(ctx))); err != nil {
			return nil, fmt.Errorf("watching pods: %w", err)
		}
	}
	go inf.RunWithContext(ctx)
	// Until GPUNodes are listed every node is one Tessera cannot judge,
	// which is safe (neutral scores, no verdicts) but places the first pods
	// blindly: wait a bounded time for the list — unless the GPUNode
	// resource is not served at all (the CRD is not installed yet), when
	// waiting cannot help; the informer keeps retrying.
	if _, err := gc.List(ctx, metav1.ListOptions{Limit: 1}); apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Info("The GPUNode resource is not served (CRD not installed?); nodes are neutral to Tessera until it is", "plugin", Name)
		return p, nil
	}
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The registration's HasSynced, not the informer's: the informer has
	// synced once its store holds the list, the handler once it has taken
	// every listed GPUNode into the model (with 1,213 GPUNodes, 443 were in
	// the model when the informer said it had synced).
	if !cache.WaitForCacheSync(syncCtx.Done(), reg.HasSynced) {
		klog.FromContext(ctx).Info("GPUNodes not listed yet; nodes are neutral to Tessera until they are", "plugin", Name)
	}
	return p, nil
}

func newPlugin(args Args, h fwk.Handle, clk clock.PassiveClock) (*Plugin, error) {
	scorer, err := scoring.NewScorer(args.Placement)
	if err != nil {
		return nil, fmt.Errorf("creating %s scorer: %w", Name, err)
	}
	mustRegisterMetrics()
	p := &Plugin{handle: h, args: args, clock: clk, c: newCluster(scorer, args.StaleAfter.Duration)}
	if h != nil {
		p.nodeInfo = func(name string) (fwk.NodeInfo, error) {
			l := h.SnapshotSharedLister()
			if l == nil {
				return nil, errors.New("the scheduler has no snapshot")
			}
			return l.NodeInfos().Get(name)
		}
	}
	return p, nil
}

// Name implements fwk.Plugin.
func (p *Plugin) Name() string { return Name }

// cycleData is what PreFilter learns about a pod, for the rest of its cycle:
// the same for every copy of the cycle (cycleCore), and the pods a
// preemption dry run removed from nodes in this copy (removed, by node
// name; see RemovePod).
type cycleData struct {
	*cycleCore
	removed map[string][]*corev1.Pod
}

// cycleCore is what PreFilter learns about a pod.
type cycleCore struct {
	d                  PodDemand
	allowed, preferred []string
	// resID is the pod's resource, interned (nodeEntry.mode).
	resID int32
	// modes are the ways the nodes Tessera can judge advertise the pod's
	// resource (the survey's); countable is set when counting filters the
	// pod and Tessera's Filter is skipped (see countable).
	modes     []resMode
	countable bool
	// absent is how many nodes PreFilter's result left out because they
	// advertise no such resource (see survey.preFilterResult), roomless how
	// many it left out because they have too little of it free (see rooms).
	absent, roomless int
	// reqs are the compiled requests by how a node advertises the pod's
	// resource (PreFilter compiles one per mode, under the plugin's write
	// lock, so Filter reads them under the read lock).
	reqs map[resMode]*scoring.Request
	// scores are PreScore's, by the scheduler's Node object: Score gets
	// the NodeInfos PreScore got.
	scores map[*corev1.Node]int64
	// hint is the cluster-wide part of a Filter refusal, computed once
	// per mode by the first Filter call that needs it (under hintMu: Filter
	// runs in parallel under the plugin's read lock).
	hintMu sync.Mutex
	hint   map[resMode]string
}

// Clone shares the core: what changes in it after PreFilter changes under
// the plugin's lock and is the same for every copy of the cycle. The pods
// removed are the copy's own (kube-scheduler's preemption dry runs clone
// the cycle per node and run in parallel); their lists are copied on write.
func (c *cycleData) Clone() fwk.StateData {
	return &cycleData{cycleCore: c.cycleCore, removed: maps.Clone(c.removed)}
}

const stateKey fwk.StateKey = Name

func getCycle(state fwk.CycleState) *cycleData {
	v, err := state.Read(stateKey)
	if err != nil {
		return nil
	}
	cd, _ := v.(*cycleData)
	return cd
}

// PreFilter reads the pod's GPU demand and refuses, as
// UnschedulableAndUnresolvable with a reason for `kubectl describe pod`,
// what no node can host. Pods without GPUs skip Filter (counting sees all
// they need) but are scored: where a CPU-only pod goes decides which GPUs
// its CPU strands.
func (p *Plugin) PreFilter(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, nodes []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	defer observe("PreFilter", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	d, err := ReadPod(pod, p.c.isShared)
	if err != nil {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
	}
	if d.Resource == "" {
		state.Write(stateKey, &cycleData{cycleCore: &cycleCore{d: d, reqs: map[resMode]*scoring.Request{}}})
		return nil, fwk.NewStatus(fwk.Skip)
	}
	if _, ok := IsMIGResource(d.Resource); ok && d.Count > 1 {
		klog.FromContext(ctx).V(4).Info("Pod asks for several MIG slices; placed by counting alone", "pod", klog.KObj(pod), "count", d.Count)
		return nil, fwk.NewStatus(fwk.Skip)
	}
	s := p.c.survey(&d, nodes, p.clock.Now())
	allowed, preferred, err := d.Products(s.products)
	if err != nil {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
	}
	if msg := s.refusal(&d, allowed); msg != "" {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, msg)
	}
	cd := &cycleData{cycleCore: &cycleCore{d: d, resID: p.c.resID(d.Resource), allowed: allowed, preferred: preferred, modes: s.modes, absent: s.absent, reqs: map[resMode]*scoring.Request{}, hint: map[resMode]string{}}}
	for _, mode := range s.modes {
		// An error is Filter's to report, node by node.
		_, _ = p.request(cd, mode)
	}
	state.Write(stateKey, cd)
	res := s.preFilterResult()
	if res == nil {
		if names, left := p.rooms.named(pod, d.Resource, d.Count, nodes); names != nil {
			res, cd.roomless = &fwk.PreFilterResult{NodeNames: names}, left
		}
	}
	if p.c.countable(cd) {
		cd.countable = true
		if res == nil {
			return nil, fwk.NewStatus(fwk.Skip)
		}
		// A Skip would drop the result (the framework ignores a skipping
		// plugin's): Filter runs, and returns at once (cd.countable).
	}
	return res, nil
}

// countable reports whether counting — NodeResourcesFit on the nodes'
// allocatable — filters the pod exactly as Tessera's Filter would, so that
// Filter is skipped for it (PreFilter's Skip), which takes the plugin out of
// the 16 goroutines that filter every node for every pod. That holds for a
// pod without a product constraint asking for one device (a whole GPU, a
// MIG slice, a share unit: any free one fits) or for whole GPUs without a
// required interconnect, on a cluster where counting decides every node
// (no unhealthy advertised device, no GPU advertised whole beside its
// shares: cluster.uncountable) — given that the model and the NodeInfo
// count the same pods, which syncFree and the assume cache keep. Filter
// still runs for share units (they must fit on one GPU), required NVLink
// sets, allowed products and every pod while a node is uncountable.
// PostFilter gives skipped pods Filter's refusal words when no node has
// the GPUs.
func (c *cluster) countable(cd *cycleData) bool {
	if c.uncountable > 0 || cd.allowed != nil || cd.d.Resource == "" {
		return false
	}
	if cd.d.Count == 1 {
		return true
	}
	if cd.d.Interconnect == InterconnectNVLink {
		return false
	}
	for _, m := range cd.modes {
		if m.kind != scoring.KindWhole {
			return false
		}
	}
	return true
}

// request compiles the pod's request for a node that advertises its
// resource as mode. Call with the lock held.
func (p *Plugin) request(cd *cycleData, mode resMode) (*scoring.Request, error) {
	if r, ok := cd.reqs[mode]; ok {
		return r, nil
	}
	sd, err := cd.d.demandOn(mode, cd.allowed, cd.preferred)
	if err != nil {
		return nil, err
	}
	r, err := p.c.scorer.Compile(sd)
	if err != nil {
		return nil, err
	}
	cd.reqs[mode] = r
	return r, nil
}

// syncFree makes the node's free CPU and memory in the scoring model those
// of the scheduler's NodeInfo (which counts every pod, GPU or not).
//
// It is asked for every node of every pod PreScore scores, and the answer
// rarely changes, so it first asks whether anything did: kube-scheduler
// gives a NodeInfo a new generation (from one counter for all nodes)
// whenever it changes, and the cache's version changes with its state.
// Reading the NodeInfo's resources and the model's free CPU every time
// (cold lines, at 5,000 nodes) was a fifth of PreScore's time in a
// profile of BenchmarkCycle5000Nodes.
func (p *Plugin) syncFree(e *nodeEntry, ni fwk.NodeInfo) {
	gen := ni.GetGeneration()
	if e.cpuKnown && gen == e.syncedGen && e.cache.Version() == e.syncedVer {
		return
	}
	defer func() { e.syncedGen, e.syncedVer = gen, e.cache.Version() }()
	cpu, mem := nodeInfoFree(ni)
	e.cpuKnown = true
	_ = e.cache.SetFree(cpu, mem) // nodeInfoFree is never negative
}

// Filter judges only what counting cannot see: whether the share units fit
// on one GPU, the required interconnect, unhealthy devices, free MIG slices
// of the profile and allowed products. A node Tessera cannot judge passes.
// It does not run for pods counting filters exactly (see countable).
func (p *Plugin) Filter(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) *fwk.Status {
	defer observeFilter(time.Now())
	cd := getCycle(state)
	if cd == nil || cd.d.Resource == "" || cd.countable {
		return nil
	}
	if victims := cd.removed[ni.Node().Name]; len(victims) > 0 {
		return p.filterWithout(ctx, cd, pod, ni, victims)
	}
	now := p.clock.Now()
	p.mu.RLock()
	st, done := p.filterCached(cd, ni, now)
	p.mu.RUnlock()
	if done {
		return st
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.c.entryOf(ni.Node())
	if !p.c.freshEntry(e, now) {
		return nil
	}
	p.c.index(ni.Node(), e)
	mode, r, st, ok := p.nodeRequest(cd, e)
	if !ok {
		return st
	}
	p.syncFree(e, ni)
	res := p.c.scorer.Score(e.cache, r)
	if res.Err != nil {
		klog.FromContext(ctx).V(5).Info("Node refused", "pod", klog.KObj(pod), "node", ni.Node().Name, "reason", res.Err)
		return fwk.NewStatus(fwk.Unschedulable, p.refusal(cd, mode, e))
	}
	return nvlinkVerdict(cd, mode, res)
}

// nodeRequest is the pod's compiled request on the node, by how the node
// advertises the pod's resource; ok is false when the verdict is st without
// scoring (nil: no verdict, a pod of several MIG slices, which counting
// places). Call with the write lock held.
func (p *Plugin) nodeRequest(cd *cycleData, e *nodeEntry) (mode resMode, r *scoring.Request, st *fwk.Status, ok bool) {
	mode, has := e.mode(cd)
	if !has {
		return mode, nil, advertisesNo(cd.d.Resource), false
	}
	r, err := p.request(cd, mode)
	if err != nil {
		if errors.Is(err, errManySlices) {
			return mode, nil, nil, false
		}
		return mode, nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error()), false
	}
	return mode, r, nil, true
}

// filterCached is Filter's verdict from what is already known — the node's
// entry, the compiled request, the node's free CPU and memory as the
// NodeInfo has them and the node's cached score of the request — without
// changing the model, under the read lock (a refusal's words are computed
// once per pod, see refusal). done is false when the request or the score
// must be computed first.
func (p *Plugin) filterCached(cd *cycleData, ni fwk.NodeInfo, now time.Time) (st *fwk.Status, done bool) {
	e := p.c.entryOf(ni.Node())
	if !p.c.freshEntry(e, now) {
		return nil, true
	}
	mode, has := e.mode(cd)
	if !has {
		return advertisesNo(cd.d.Resource), true
	}
	r, ok := cd.reqs[mode]
	if !ok || !p.freeInSync(e, ni) {
		return nil, false
	}
	res, ok := p.c.scorer.Cached(e.cache, r)
	if !ok {
		return nil, false
	}
	if res.Err != nil {
		return fwk.NewStatus(fwk.Unschedulable, p.refusal(cd, mode, e)), true
	}
	return nvlinkVerdict(cd, mode, res), true
}

// freeInSync reports whether the scoring model's free CPU and memory of the
// node are the NodeInfo's (syncFree would change nothing).
func (p *Plugin) freeInSync(e *nodeEntry, ni fwk.NodeInfo) bool {
	cpu, mem := nodeInfoFree(ni)
	st := e.cache.State()
	return e.cpuKnown && st.CPUFree == cpu && st.MemFree == mem
}

// nodeInfoFree is the node's free milli-CPU and memory (MiB) as the
// scheduler's NodeInfo counts them (every pod, GPU or not).
func nodeInfoFree(ni fwk.NodeInfo) (cpu, mem int64) {
	alloc, req := ni.GetAllocatable(), ni.GetRequested()
	return max(0, alloc.GetMilliCPU()-req.GetMilliCPU()), max(0, alloc.GetMemory()-req.GetMemory()) >> 20
}

// advertisesNo refuses a node that does not advertise the pod's resource.
func advertisesNo(r corev1.ResourceName) *fwk.Status {
	return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("node advertises no %s", r))
}

// nvlinkVerdict refuses a node whose best set for a pod that requires
// NVLink has no NVLink pair.
func nvlinkVerdict(cd *cycleData, mode resMode, res scoring.Result) *fwk.Status {
	if cd.d.Interconnect == InterconnectNVLink && mode.kind == scoring.KindWhole && cd.d.Count >= 2 && res.Quality.MinNVLinks == 0 {
		return fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("no free set of %d NVLink-connected GPUs (%s=%s)", cd.d.Count, AnnotationInterconnect, InterconnectNVLink))
	}
	return nil
}

// refusal is the reason a node cannot host the pod, in words shared by every
// node that cannot for the same reason (so `kubectl describe` aggregates
// them), with the best the cluster has. Call with the lock held, read or
// write: the cluster-wide part is computed once per pod and mode.
func (p *Plugin) refusal(cd *cycleData, mode resMode, e *nodeEntry) string {
	st := e.cache.State()
	if st.CPUFree < cd.d.CPU || st.MemFree < cd.d.Memory {
		return noCPU
	}
	return p.hint(cd, mode)
}

// noCPU refuses a node whose GPUs would do but not its free CPU or memory.
const noCPU = "not enough free CPU or memory beside the free GPUs"

// hint is the cluster-wide part of a refusal for lack of free devices of
// mode, computed once per pod from the model as it stands.
func (p *Plugin) hint(cd *cycleData, mode resMode) string {
	cd.hintMu.Lock()
	defer cd.hintMu.Unlock()
	if h, ok := cd.hint[mode]; ok {
		return h
	}
	h := hintText(cd, mode, p.c.bestFree(cd, mode, p.clock.Now()))
	cd.hint[mode] = h
	return h
}

// hintText words the lack of free devices of a mode for the pod, with b,
// the most the cluster has free (bestFree).
func hintText(cd *cycleData, mode resMode, b best) string {
	var h string
	switch mode.kind {
	case scoring.KindShare:
		h = fmt.Sprintf("no GPU has %d free units of %s", cd.d.Count, cd.d.Resource)
		if b.node != "" {
			h += fmt.Sprintf("; largest free: %d on node %s, GPU %d", b.n, b.node, b.gpu)
		}
	case scoring.KindMIG:
		h = fmt.Sprintf("no free MIG slice %s on a healthy GPU of an allowed product", mode.profile)
		if b.node != "" {
			h += fmt.Sprintf("; free %s slices: %d, e.g. on node %s", mode.profile, b.n, b.node)
		}
	default:
		h = fmt.Sprintf("no node has %d free healthy GPUs (%s) of an allowed product", cd.d.Count, cd.d.Resource)
		if b.node != "" {
			h += fmt.Sprintf("; the most: %d on node %s", b.n, b.node)
		}
	}
	return h
}

// PostFilter words what Filter did not: why the nodes PreFilter's result
// left out were not filtered (they advertise no such resource), and, for a
// pod whose Filter counting did (countable) when no node Tessera can judge
// has the devices it asks for, the words Filter would have given, with the
// most the cluster has free. kube-scheduler appends them to the pod's
// condition after the nodes' summary ("Insufficient nvidia.com/gpu") and
// DefaultPreemption's, which runs first. When some node has the devices,
// what stopped the pod is not Tessera's to word. It never nominates a node.
func (p *Plugin) PostFilter(_ context.Context, state fwk.CycleState, _ *corev1.Pod, _ fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	defer observe("PostFilter", time.Now())
	cd := getCycle(state)
	if cd == nil {
		return nil, fwk.NewStatus(fwk.Unschedulable)
	}
	var words []string
	if cd.absent > 0 {
		words = append(words, fmt.Sprintf("%d node(s) advertise no %s", cd.absent, cd.d.Resource))
	}
	if cd.roomless > 0 {
		words = append(words, fmt.Sprintf("%d node(s) have less than %d %s free", cd.roomless, cd.d.Count, cd.d.Resource))
	}
	if !cd.countable {
		return nil, fwk.NewStatus(fwk.Unschedulable, words...)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	now := p.clock.Now()
	var hints []string
	for _, mode := range cd.modes {
		b := p.c.bestFree(cd, mode, now)
		need := int(cd.d.Count)
		if mode.kind == scoring.KindMIG {
			need = 1
		}
		if b.n >= need {
			return nil, fwk.NewStatus(fwk.Unschedulable, words...)
		}
		hints = append(hints, hintText(cd, mode, b))
	}
	slices.Sort(hints)
	return nil, fwk.NewStatus(fwk.Unschedulable, append(words, hints...)...)
}

// PreScore scores every node that passed filtering, at once under the lock,
// so that Score is a look-up; nodes Tessera cannot judge get NeutralScore,
// except that a CPU-only pod's best place is a node without GPUs. The pod
// is learned (scoring.ObserveArrival) before the first score.
func (p *Plugin) PreScore(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, nodes []fwk.NodeInfo) *fwk.Status {
	defer observe("PreScore", time.Now())
	cd := getCycle(state)
	if cd == nil {
		return fwk.NewStatus(fwk.Skip)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	scores := make(map[*corev1.Node]int64, len(nodes))
	var (
		lastMode resMode
		r        *scoring.Request
	)
	var first *scoring.Request // the request of most nodes, usually all
	if len(cd.modes) > 0 {
		first = cd.reqs[cd.modes[0]]
	}
	entries := p.c.entries(nodes, first)
	for i, ni := range nodes {
		n := ni.Node()
		e := entries[i]
		if !p.c.freshEntry(e, now) {
			if cd.d.Resource == "" && !advertisesGPUs(n) {
				scores[n] = noGPUsRaw
			}
			continue
		}
		p.c.index(n, e)
		mode, has := e.mode(cd)
		if !has {
			continue
		}
		if r == nil || mode != lastMode {
			var err error
			if r, err = p.request(cd, mode); err != nil {
				r = nil
				continue
			}
			lastMode = mode
			// Before the first Rank; once per request is enough (the
			// pod is observed once), and was 3 % of PreScore per node.
			p.c.scorer.ObserveArrival(string(pod.UID), r)
		}
		p.syncFree(e, ni)
		// Rank is Score's Key without copying the Result.
		key, err := p.c.scorer.Rank(e.cache, r)
		if err != nil {
			scores[n] = -1
			continue
		}
		scores[n] = key // only its order means anything
	}
	cd.scores = scores
	return nil
}

// Score returns PreScore's raw score; NormalizeScore maps it to the
// framework's range.
func (p *Plugin) Score(_ context.Context, state fwk.CycleState, _ *corev1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	cd := getCycle(state)
	if cd == nil || cd.scores == nil {
		return NeutralScore, nil
	}
	s, ok := cd.scores[ni.Node()]
	if !ok {
		return neutralRaw, nil
	}
	return s, nil
}

// neutralRaw marks a node Tessera cannot judge among the raw scores,
// noGPUsRaw a node without a GPUNode that advertises no GPU resource (for
// a CPU-only pod).
const (
	neutralRaw = -2
	noGPUsRaw  = -3
)

// advertisesGPUs reports whether a node's allocatable lists an nvidia.com/
// resource (whole GPUs, MIG slices, shares under NVIDIA's names).
func advertisesGPUs(n *corev1.Node) bool {
	for r, q := range n.Status.Allocatable {
		if strings.HasPrefix(string(r), "nvidia.com/") && !q.IsZero() {
			return true
		}
	}
	return false
}

// ScoreExtensions implements fwk.ScorePlugin.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return p }

// NormalizeScore maps the judged nodes' raw scores (Result.Key) onto the
// framework's range so that kube-scheduler picks what Tessera ranks first:
// see normalize. A node Tessera cannot judge gets NeutralScore, one that no
// longer fits MinNodeScore, and, for a CPU-only pod, a node without GPUs
// MaxNodeScore (it strands nothing).
func (p *Plugin) NormalizeScore(_ context.Context, state fwk.CycleState, _ *corev1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	if getCycle(state) == nil {
		return nil
	}
	normalize(scores)
	return nil
}

// Reserve plans the pod's devices on the chosen node and takes them in the
// assume cache, so the next pod's cycle sees them held. A node Tessera
// cannot judge gets no plan. When the node no longer has room (its GPUNode
// changed since Filter) the pod is rejected and retried.
func (p *Plugin) Reserve(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, nodeName string) *fwk.Status {
	defer observe("Reserve", time.Now())
	cd := getCycle(state)
	if cd == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.c.fresh(nodeName, p.clock.Now())
	if !ok {
		return nil
	}
	mode, has := e.model.mode(cd.d.Resource)
	if !has {
		return fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("node %s advertises no %s", nodeName, cd.d.Resource))
	}
	r, err := p.request(cd, mode)
	if err != nil {
		if errors.Is(err, errManySlices) {
			return nil
		}
		return fwk.AsStatus(err)
	}
	// Neither Filter (a countable pod) nor PreScore (kube-scheduler scores
	// no node when one is feasible) may have run on the node.
	if p.nodeInfo != nil {
		ni, err := p.nodeInfo(nodeName)
		if err != nil {
			return fwk.AsStatus(fmt.Errorf("reading node %s from the scheduler's snapshot: %w", nodeName, err))
		}
		p.syncFree(e, ni)
	}
	if mode.kind == scoring.KindNone {
		// Its CPU and memory reach the model through the NodeInfo (syncFree).
		p.c.scorer.ObserveArrival(string(pod.UID), r)
		return nil
	}
	res := p.c.scorer.Score(e.cache, r)
	if res.Err != nil {
		return fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("node %s no longer has the devices: %v", nodeName, res.Err))
	}
	a := res.Assignment
	a.GPUs = slices.Clone(a.GPUs)
	ap := &assumedPod{
		ref:  podRef{namespace: pod.Namespace, name: pod.Name, uid: pod.UID},
		node: nodeName, req: r, kind: mode.kind, a: a,
		devices: e.model.devices(mode.kind, a),
	}
	if err := p.c.assume(e, ap); err != nil {
		return fwk.AsStatus(fmt.Errorf("assuming devices %v on node %s: %w", ap.devices, nodeName, err))
	}
	p.c.scorer.ObserveArrival(string(pod.UID), r)
	klog.FromContext(ctx).V(4).Info("Planned devices", "pod", klog.KObj(pod), "node", nodeName, "devices", ap.devices)
	return nil
}

// Unreserve gives the pod's planned devices back (a rejected gang member,
// a failed bind). It is idempotent.
func (p *Plugin) Unreserve(_ context.Context, _ fwk.CycleState, pod *corev1.Pod, _ string) {
	defer observe("Unreserve", time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c.forget(pod.UID)
}

// pluginLister is the part of kube-scheduler's framework (the Handle a
// plugin gets) that tells which plugins run at each extension point.
type pluginLister interface {
	ListPlugins() *schedconfig.Plugins
}

// bindsPods reports whether Tessera's Bind runs first among the profile's
// binders (the profile enables TesseraGPU at the bind extension point, as
// the shipped configurations do). Then the planned devices travel in the
// Binding's annotations, which the API server copies onto the pod with
// the node name: one write per pod, as the default binder makes. Otherwise
// PreBind patches the pod first, which costs two more writes per pod (the
// patch, and the nominatedNodeName status update kube-scheduler makes
// before any PreBind that has work): in scheduler_perf that halved the
// profile's throughput. Decided on first use, once the framework is built.
func (p *Plugin) bindsPods() bool {
	p.bindOnce.Do(func() {
		l, ok := p.handle.(pluginLister)
		if !ok {
			return
		}
		if ps := l.ListPlugins(); ps != nil && len(ps.Bind.Enabled) > 0 {
			p.binds = ps.Bind.Enabled[0].Name == Name
		}
	})
	return p.binds
}

// planned returns the devices planned for the pod, joined as the
// annotation carries them, and whether it has a plan.
func (p *Plugin) planned(uid types.UID) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ap := p.c.assumed[uid]
	if ap == nil {
		return "", false
	}
	return strings.Join(ap.devices, ","), true
}

// PreBindPreFlight skips pods without a plan, and every pod when Tessera's
// Bind records the plan (bindsPods).
func (p *Plugin) PreBindPreFlight(_ context.Context, _ fwk.CycleState, pod *corev1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	if p.bindsPods() {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	if _, ok := p.planned(pod.UID); !ok {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return &fwk.PreBindPreFlightResult{}, nil
}

// PreBind writes the planned devices into the pod (AnnotationDevices)
// before it is bound, so that the gpu-agent follows the plan when the
// kubelet admits the pod, a restarted or newly elected scheduler knows the
// plan before the agent reports the pod, and people can compare plan and
// outcome. It runs only when Tessera does not bind (PreBindPreFlight).
func (p *Plugin) PreBind(ctx context.Context, _ fwk.CycleState, pod *corev1.Pod, _ string) *fwk.Status {
	defer observe("PreBind", time.Now())
	devs, ok := p.planned(pod.UID)
	if !ok || p.bindsPods() {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, AnnotationDevices, devs)
	if _, err := p.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("annotating pod %s/%s with its devices: %w", pod.Namespace, pod.Name, err))
	}
	return nil
}

// Bind binds a pod with a plan as kube-scheduler's DefaultBinder does, with
// the planned devices (AnnotationDevices) in the Binding, which the API
// server sets on the pod together with its node. Pods without a plan are
// left to the next binder (Skip).
func (p *Plugin) Bind(ctx context.Context, _ fwk.CycleState, pod *corev1.Pod, nodeName string) *fwk.Status {
	defer observe("Bind", time.Now())
	devs, ok := p.planned(pod.UID)
	if !ok {
		return fwk.NewStatus(fwk.Skip)
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Annotations: map[string]string{AnnotationDevices: devs}},
		Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
	}
	if c := p.handle.APICacher(); c != nil {
		onFinish, err := c.BindPod(binding)
		if err == nil {
			err = c.WaitOnFinish(ctx, onFinish)
		}
		if err != nil {
			return fwk.AsStatus(fmt.Errorf("binding pod %s/%s to node %s with devices %s: %w", pod.Namespace, pod.Name, nodeName, devs, err))
		}
		return nil
	}
	if err := p.handle.ClientSet().CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("binding pod %s/%s to node %s with devices %s: %w", pod.Namespace, pod.Name, nodeName, devs, err))
	}
	return nil
}
