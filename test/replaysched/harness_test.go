package replaysched

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/configz"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/replay"
	"github.com/tessera-gpu/tessera/pkg/scheduler"
)

// schedulerConfig is the replay's KubeSchedulerConfiguration: one profile
// with every default Filter, TesseraGPU the only PreScore and Score plugin,
// every feasible node scored, and GPUNodes trusted for a day (no agent
// heartbeats here).
//
// With batching, PodTopologySpread has no system default constraints: with
// them (its default) it signs no pod, which turns 1.36's opportunistic
// batching off for every pod; without, the trace's pods are signable and
// consecutive pods of one signature may be placed from the previous pod's
// ranking without scoring (what TesseraGPU's NormalizeScore and SignPod
// keep exact).
func schedulerConfig(kubeconfig string, batching bool) string {
	spread := ""
	if batching {
		spread = `
  - name: PodTopologySpread
    args:
      defaultingType: List`
	}
	return fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
clientConnection:
  kubeconfig: %s
  qps: 5000
  burst: 5000
percentageOfNodesToScore: 100
profiles:
- schedulerName: %s
  percentageOfNodesToScore: 100
  plugins:
    multiPoint:
      enabled:
      - name: %[3]s
    preScore:
      disabled:
      - name: "*"
      enabled:
      - name: %[3]s
    score:
      disabled:
      - name: "*"
      enabled:
      - name: %[3]s
    bind:
      enabled:
      - name: %[3]s
  pluginConfig:
  - name: %[3]s
    args:
      apiVersion: %s
      kind: %s
      staleAfter: 24h%s
`, kubeconfig, schedulerName, scheduler.Name, scheduler.ArgsAPIVersion, scheduler.ArgsKind, spread)
}

// comparison is one replay under the simulator and through the scheduler.
type comparison struct {
	trace      string
	seed       int64
	batching   bool
	nodes      int
	c          *replay.Cluster
	tr         *replay.Trace
	sim, sched []replay.Event
	names      []string // Kubernetes node name by cluster index
	// simCurve and schedCurve are the allocation curves.
	simCurve, schedCurve replay.Curve
	simWall, schedWall   time.Duration
	simFailed, failed    int
	// freshAtStart is how many fresh GPUNodes the plugin had when the first
	// pod was created; hinted how many pods opportunistic batching placed
	// on a node of the previous pod's ranking.
	freshAtStart, hinted, noHint int
	flushes                      string
}

// compare replays seed of the trace (nodes and pods CSVs) at 130 % under
// tessera-online, then through the real kube-scheduler.
func compare(t *testing.T, nodesCSV, podsCSV string, seed int64, batching bool) *comparison {
	t.Helper()
	c, err := replay.LoadCluster(nodesCSV)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := replay.LoadTrace(podsCSV, c)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := replay.Replay(t.Context(), replay.RunSpec{Cluster: c, Trace: tr, Policy: replay.Tessera{Prior: replay.PriorNone},
		Seed: seed, Tune: replay.DefaultTune, KeepEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	cmp := &comparison{trace: tr.Name, seed: seed, batching: batching, nodes: len(c.Nodes), c: c, tr: tr, sim: sim.Events, simCurve: sim.Curve, simWall: sim.Wall, simFailed: sim.Failed}
	// Node i is named by its rank: the plugin breaks ties between equal
	// keys by node name, the replay by rank.
	for i := range c.Nodes {
		cmp.names = append(cmp.names, fmt.Sprintf("r%05d-%s", sim.Rank[i], c.Nodes[i].Name))
	}

	cp := k8stest.StartForTest(t)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	t.Cleanup(cancel) // before the control plane stops
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 4000
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := inventorytest.InstallCRD(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	gc, err := client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := createNodes(ctx, kc, gc, c, cmp.names); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The trace's pods are of one priority and never preempt (the replay
	// has no preemption): their priority class says so, which spares each
	// unschedulable pod the preemption dry run.
	never := corev1.PreemptNever
	if _, err := kc.SchedulingV1().PriorityClasses().Create(ctx, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: priorityClass}, Value: 0, PreemptionPolicy: &never,
		Description: "trace replay pods: one priority, no preemption",
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	outcomes, err := watchPods(ctx, kc)
	if err != nil {
		t.Fatal(err)
	}
	startScheduler(ctx, t, cp.Kubeconfig, batching)

	index := map[string]int{}
	for i, n := range cmp.names {
		index[n] = i
	}
	cmp.freshAtStart = int(metricValue(t, "tessera_scheduler_gpunodes", "state", "fresh"))
	start := time.Now()
	var arrived, used int64
	for step, ev := range sim.Events {
		p := &tr.Pods[ev.Pod]
		name := fmt.Sprintf("a%05d", step)
		pod, err := replay.TracePod(c, p, name)
		if err != nil {
			t.Fatal(err)
		}
		pod.Spec.SchedulerName, pod.Spec.PriorityClassName = schedulerName, priorityClass
		if _, err := kc.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s (%s): %v", name, p.Name, err)
		}
		o, err := outcomes.wait(ctx, name, func(o outcome) bool { return o.node != "" || o.unschedulable })
		if err != nil {
			t.Fatalf("pod %s (%s, step %d): %v", name, p.Name, step, err)
		}
		arrived += p.Demand()
		node := -1
		if o.unschedulable {
			// The replay drops a pod that fits nowhere: delete it before
			// the next arrives, so that no retry places it later.
			cmp.failed++
			if err := kc.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
				t.Fatalf("deleting unschedulable pod %s: %v", name, err)
			}
			if _, err := outcomes.wait(ctx, name, func(o outcome) bool { return o.deleted }); err != nil {
				t.Fatalf("pod %s: %v", name, err)
			}
		} else {
			var ok bool
			if node, ok = index[o.node]; !ok {
				t.Fatalf("pod %s bound to unknown node %s", name, o.node)
			}
			used += p.Demand()
		}
		cmp.sched = append(cmp.sched, replay.Event{Arrived: arrived, Used: used, Pod: ev.Pod, Node: node})
		if (step+1)%1000 == 0 {
			t.Logf("%d of %d pods in %s", step+1, len(sim.Events), time.Since(start).Round(time.Second))
		}
	}
	cmp.schedWall = time.Since(start)
	cmp.hinted = int(metricValue(t, "scheduler_batch_attempts_total", "result", "hint_used"))
	cmp.noHint = int(metricValue(t, "scheduler_batch_attempts_total", "result", "no_hint"))
	cmp.flushes = metricSeries(t, "scheduler_batch_cache_flushed_total", "reason")
	cmp.schedCurve = replay.Discretize(cmp.sched, c.TotalGPUs())
	return cmp
}

// createNodes creates the trace's Nodes and their GPUNodes (applied as
// the gpu-agent applies them), eight at a time.
func createNodes(ctx context.Context, kc kubernetes.Interface, gc *client.Client, c *replay.Cluster, names []string) error {
	now := time.Now()
	work := make(chan int)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				errs <- createNode(ctx, kc, gc, c, i, names[i], now)
			}
		})
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func createNode(ctx context.Context, kc kubernetes.Interface, gc *client.Client, c *replay.Cluster, i int, name string, hb time.Time) error {
	node, err := kc.CoreV1().Nodes().Create(ctx, replay.TraceNode(c, i, name), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	gn := replay.TraceGPUNode(c, i, name, hb)
	gn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
	opts := client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true}
	if _, err := gc.Apply(ctx, gn, opts); err != nil {
		return fmt.Errorf("applying gpunode %s: %w", name, err)
	}
	if _, err := gc.ApplyStatus(ctx, gn, opts); err != nil {
		return fmt.Errorf("applying gpunode %s status: %w", name, err)
	}
	return nil
}

// startScheduler runs kube-scheduler in-process with the replay's profile
// until ctx ends, after checking that TesseraGPU is the profile's only
// Score plugin.
func startScheduler(ctx context.Context, t *testing.T, kubeconfig string, batching bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "scheduler.yaml")
	if err := os.WriteFile(path, []byte(schedulerConfig(kubeconfig, batching)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := options.NewOptions()
	opts.ConfigFile = path
	opts.SecureServing.BindPort = 0
	cc, sched, err := app.Setup(ctx, opts, app.WithPlugin(scheduler.Name, scheduler.New))
	if err != nil {
		t.Fatalf("setting the scheduler up: %v", err)
	}
	fw, ok := sched.Profiles[schedulerName]
	if !ok {
		t.Fatalf("no profile %s", schedulerName)
	}
	if pl := fw.ListPlugins(); len(pl.Score.Enabled) != 1 || pl.Score.Enabled[0].Name != scheduler.Name {
		t.Fatalf("score plugins %+v, want %s alone", pl.Score.Enabled, scheduler.Name)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Run registers the configuration under /configz, which is
		// process-wide and refuses a second registration: delete it, as
		// kube-scheduler's own test server does, so that the next
		// scheduler of the process can run.
		defer configz.Delete("componentconfig")
		err := app.Run(ctx, cc, sched)
		if ctx.Err() == nil {
			// The waits for bindings would only time out.
			t.Errorf("the scheduler stopped by itself: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// outcome is what the pod watch saw of one pod.
type outcome struct {
	node          string
	unschedulable bool
	deleted       bool
	// err is set for an outcome the replay cannot take (a scheduler error).
	err error
}

// podOutcomes holds each watched pod's latest outcome.
type podOutcomes struct {
	mu      sync.Mutex
	changed chan struct{}
	last    map[string]outcome
}

// watchPods watches the replay's pods.
func watchPods(ctx context.Context, kc kubernetes.Interface) (*podOutcomes, error) {
	po := &podOutcomes{changed: make(chan struct{}, 1), last: map[string]outcome{}}
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(namespace))
	inf := f.Core().V1().Pods().Informer()
	set := func(name string, o outcome) {
		po.mu.Lock()
		po.last[name] = o
		po.mu.Unlock()
		select {
		case po.changed <- struct{}{}:
		default:
		}
	}
	on := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		o := outcome{node: p.Spec.NodeName}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				switch c.Reason {
				case corev1.PodReasonUnschedulable:
					o.unschedulable = true
				case corev1.PodReasonSchedulerError:
					o.err = fmt.Errorf("scheduler error: %s", c.Message)
				}
			}
		}
		set(p.Name, o)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				set(p.Name, outcome{deleted: true})
			}
		},
	}); err != nil {
		return nil, err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, errors.New("pod informer did not sync")
	}
	return po, nil
}

// wait returns the pod's outcome once done accepts it, or fails after
// podDeadline.
func (po *podOutcomes) wait(ctx context.Context, name string, done func(outcome) bool) (outcome, error) {
	deadline := time.NewTimer(podDeadline)
	defer deadline.Stop()
	for {
		po.mu.Lock()
		o, ok := po.last[name]
		po.mu.Unlock()
		if ok && o.err != nil {
			return o, o.err
		}
		if ok && done(o) {
			return o, nil
		}
		select {
		case <-po.changed:
		case <-deadline.C:
			return o, fmt.Errorf("no outcome after %s (last seen %+v)", podDeadline, o)
		case <-ctx.Done():
			return o, ctx.Err()
		}
	}
}

// diff is a pod that landed elsewhere.
type diff struct {
	step            int
	pod             string
	simNode, schedN string
}

// diffs lists the pods that landed on different nodes (or on a node in one
// replay and nowhere in the other).
func (c *comparison) diffs() []diff {
	var out []diff
	name := func(n int) string {
		if n < 0 {
			return "-"
		}
		return c.names[n]
	}
	for i := range c.sched {
		if c.sim[i].Node != c.sched[i].Node {
			out = append(out, diff{step: i, pod: c.tr.Pods[c.sim[i].Pod].Name, simNode: name(c.sim[i].Node), schedN: name(c.sched[i].Node)})
		}
	}
	return out
}

// summary is the comparison in a few lines.
func (c *comparison) summary() string {
	pods := len(c.sched)
	d := c.diffs()
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s, seed %d, %d nodes, %d pods (130 %% arrived), TesseraGPU the only score plugin\n", c.trace, c.seed, c.nodes, pods)
	fmt.Fprintf(&b, "allocation at 100 %% arrived: simulate %.2f %%, scheduler %.2f %%\n", c.simCurve.At(100), c.schedCurve.At(100))
	fmt.Fprintf(&b, "allocation at 130 %% arrived: simulate %.2f %%, scheduler %.2f %%\n", c.simCurve.At(130), c.schedCurve.At(130))
	fmt.Fprintf(&b, "same node: %d of %d pods (%.2f %%); unschedulable: simulate %d, scheduler %d\n", pods-len(d), pods, 100*float64(pods-len(d))/float64(max(pods, 1)), c.simFailed, c.failed)
	batching := "off (PodTopologySpread's system default constraints make every pod unsignable)"
	if c.batching {
		batching = fmt.Sprintf("on: %d pods placed on a hint (the previous ranking's next node), %d signable pods without one", c.hinted, c.noHint)
	}
	fmt.Fprintf(&b, "fresh GPUNodes in the plugin at the first pod: %d of %d; opportunistic batching %s\n", c.freshAtStart, c.nodes, batching)
	if c.batching {
		fmt.Fprintf(&b, "batch state dropped, by reason: %s\n", c.flushes)
	}
	fmt.Fprintf(&b, "wall: simulate %s, scheduler %s (%.1f pods/s, one at a time)\n", c.simWall.Round(time.Millisecond), c.schedWall.Round(time.Second), float64(pods)/c.schedWall.Seconds())
	if len(d) > 0 {
		fmt.Fprintf(&b, "first difference: step %d, pod %s: simulate %s, scheduler %s\n", d[0].step, d[0].pod, d[0].simNode, d[0].schedN)
		b.WriteString(c.nodesAt(d[0].step, d[0].simNode, d[0].schedN))
	}
	return b.String()
}

// nodesAt describes the two nodes as the replay had them before step.
func (c *comparison) nodesAt(step int, names ...string) string {
	st := replay.NewState(c.c)
	for _, ev := range c.sim[:step] {
		if ev.Node >= 0 {
			st.Commit(&c.tr.Pods[ev.Pod], ev.Node, ev.GPUs)
		}
	}
	var b strings.Builder
	for _, n := range names {
		i := slices.Index(c.names, n)
		if i < 0 {
			continue
		}
		ns := &st.Nodes[i]
		fmt.Fprintf(&b, "  %s (%s, %d GPUs) before: cpu free %d, memory free %d MiB, gpu milli free %v\n", n, c.c.Nodes[i].Model, c.c.Nodes[i].GPUs, ns.CPUFree, ns.MemFree, ns.GPUFree)
	}
	return b.String()
}

// check asserts the agreement the issue asks for.
func (c *comparison) check(t *testing.T) {
	t.Helper()
	t.Log("\n" + c.summary())
	for _, x := range []int{100, 130} {
		s, k := c.simCurve.At(x), c.schedCurve.At(x)
		if math.IsNaN(s) || math.IsNaN(k) || math.Abs(s-k) > maxRatioDiff {
			t.Errorf("allocation at %d %% arrived: simulate %.2f %%, scheduler %.2f %%: want within %.1f pp", x, s, k, maxRatioDiff)
		}
	}
	pods := len(c.sched)
	if same := pods - len(c.diffs()); float64(same) < minSameNode*float64(pods) {
		t.Errorf("%d of %d pods on the same node, want at least %.0f %%", same, pods, 100*minSameNode)
	}
}

// write puts summary.txt and pods.csv (step, trace pod, the simulator's
// node, the scheduler's) into dir.
func (c *comparison) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(c.summary()), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "pods.csv"))
	if err != nil {
		return err
	}
	if err := c.writePods(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func (c *comparison) writePods(w io.Writer) error {
	cw := csv.NewWriter(w)
	name := func(n int) string {
		if n < 0 {
			return ""
		}
		return c.names[n]
	}
	if err := cw.Write([]string{"step", "pod", "simulate_node", "scheduler_node", "same"}); err != nil {
		return err
	}
	for i := range c.sched {
		s, k := c.sim[i].Node, c.sched[i].Node
		if err := cw.Write([]string{strconv.Itoa(i), c.tr.Pods[c.sim[i].Pod].Name, name(s), name(k), strconv.FormatBool(s == k)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// metricValue is the value of the in-process scheduler's metric name (a
// gauge or counter) for the series whose label has the given value, 0 when
// there is none.
func metricValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// metricSeries lists the series of the in-process scheduler's counter name
// as label=value pairs, for the summary.
func metricSeries(t *testing.T, name, label string) string {
	t.Helper()
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out = append(out, fmt.Sprintf("%s=%g", l.GetValue(), m.GetCounter().GetValue()))
				}
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
