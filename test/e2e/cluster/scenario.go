package cluster

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// RelabelNode is the node whose MIG layout the scenario changes mid-way.
const RelabelNode = "dgx-h100-2"

// Result is what the scenario did, read back from the cluster.
type Result struct {
	// Pods are the scenario's pods in Workloads order.
	Pods []PodResult
	// Nodes are the fleet's nodes at the end, in fleet order.
	Nodes []NodeResult
	// Fragmentation are the scheduler's fragmentation gauges at three moments.
	Fragmentation []FragmentationSample
	// Relabel is the MIG layout change.
	Relabel RelabelResult
	// SchedulerMetricsURL is the scheduler's /metrics.
	SchedulerMetricsURL string
	// Took is the scenario's wall time (the cluster start excluded).
	Took time.Duration
}

// PodResult is one pod's outcome.
type PodResult struct {
	Workload Workload
	Phase    corev1.PodPhase
	Node     string
	// Planned are the devices the scheduler planned (gpu.tessera.dev/devices).
	Planned []string
	// Devices are the devices the kubelet's device manager allocated, as the
	// node's agent reports them in the GPUNode (from the PodResources API).
	Devices []Device
	// Interconnect is the weakest link between the pod's whole GPUs:
	// "nvswitch", "nvlink" or "pcie"; empty for fewer than two.
	Interconnect string
	// Why explains the choice from the pod's demand and the devices' topology.
	Why string
	// Refusal is the scheduler's reason while the pod could not be placed
	// (PodScheduled=False).
	Refusal string
}

// DeviceIDs are the allocated device IDs.
func (p PodResult) DeviceIDs() []string {
	var out []string
	for _, d := range p.Devices {
		out = append(out, d.ID)
	}
	return out
}

// AsPlanned reports whether the pod holds the physical devices (GPUs or MIG
// slices) the scheduler planned; share units count as their GPU.
func (p PodResult) AsPlanned() bool {
	held := map[string]bool{}
	for _, d := range p.Devices {
		u, _, _ := strings.Cut(d.ID, "::")
		held[u] = true
	}
	planned := map[string]bool{}
	for _, id := range p.Planned {
		planned[id] = true
	}
	return len(planned) > 0 && maps.Equal(held, planned)
}

// Device is one allocated device, decoded with the node's GPUNode.
type Device struct {
	// ID is the device ID as advertised: GPU or MIG UUID, "<uuid>::<n>" for a share.
	ID string
	// GPU is the physical GPU's index; Product its product.
	GPU     int
	Product string
	// MIGProfile is set for a MIG slice; Share for a time-sliced unit (1-based), with Replicas units in all.
	MIGProfile      string
	Share, Replicas int
	NUMA            int
}

// String is "GPU 3", "GPU 4 MIG 1g.10gb", "GPU 0 share 2/4".
func (d Device) String() string {
	switch {
	case d.MIGProfile != "":
		return fmt.Sprintf("GPU %d MIG %s", d.GPU, d.MIGProfile)
	case d.Replicas > 1:
		return fmt.Sprintf("GPU %d share %d/%d", d.GPU, d.Share, d.Replicas)
	}
	return fmt.Sprintf("GPU %d", d.GPU)
}

// NodeResult is one node at the end of the scenario.
type NodeResult struct {
	Name, Kind, Product string
	// Usage is, per advertised resource, the units held and advertised.
	Usage []Usage
	// Layout is the MIG layout label and its state.
	Layout, LayoutState string
	// MetricsURL is the agent's /metrics; Series the number of samples it
	// served at the end, PodSeries those carrying a pod label, and
	// PodsInMetrics the pods named there.
	MetricsURL string
	Series     int
	PodSeries  int
	// Preferred counts the agent's answers to the kubelet's preferred
	// allocations by source: "plan" (the pod's gpu.tessera.dev/devices) or
	// "own" (the allocator's choice).
	Preferred     map[string]int
	PodsInMetrics []string
}

// Usage is one resource of a node.
type Usage struct {
	Resource    string
	Used, Total int
}

// FragmentationSample is the scheduler's view of the free GPU capacity.
type FragmentationSample struct {
	When string
	// FragmentedGPUs is tessera_scheduler_fragmentation_gpus{pool=""}: the
	// free capacity the learned workload cannot use, in GPUs; FreeGPUs is
	// tessera_scheduler_free_gpus{pool=""}.
	FragmentedGPUs, FreeGPUs float64
}

// RelabelResult is the MIG layout change.
type RelabelResult struct {
	Node, From, To string
	// States are the nvidia.com/mig.config.state values seen, in order.
	States []string
	Took   time.Duration
	// Before and After are the node's advertised resources.
	Before, After map[string]int
}

// RunScenario plays the MLOps workloads on the cluster: it submits the
// pods, waits until each is Running with its devices reported by its node's
// agent (or refused, for the impossible one; the pods that need the new
// slices wait), switches RelabelNode to LayoutMixed3g, waits for the
// waiting pods to land there, and reads everything back.
func (c *Cluster) RunScenario(ctx context.Context) (*Result, error) {
	start := time.Now()
	res := &Result{SchedulerMetricsURL: c.SchedulerMetricsURL}
	sample := func(when string) error {
		f, err := c.fragmentation(ctx)
		if err != nil {
			return err
		}
		f.When = when
		res.Fragmentation = append(res.Fragmentation, f)
		return nil
	}
	if err := sample("empty fleet"); err != nil {
		return nil, err
	}

	work := Workloads()
	var first, later []Workload
	for _, w := range work {
		if w.AfterRelabel {
			later = append(later, w)
		} else {
			first = append(first, w)
		}
	}
	c.progress("Submitting %d pods (schedulerName: %s)", len(first), SchedulerName)
	if err := c.submit(ctx, first); err != nil {
		return nil, err
	}
	// The pods that need the new layout's slices are submitted now: they
	// are refused until the relabel creates the slices, and then placed
	// at the GPUNode update, not after kube-scheduler's 5-minute flush.
	c.progress("Submitting %d pods that need slices no node has yet (%s after the relabel)", len(later), RelabelNode)
	if err := c.submit(ctx, later); err != nil {
		return nil, err
	}
	refusals := map[string]string{}
	c.progress("Waiting for the pods to be placed, admitted by their kubelet and reported by their agent")
	if err := c.poll(ctx, 60*time.Second, "the pods to run or be refused", func() (bool, error) {
		for _, w := range first {
			done, refusal, err := c.settled(ctx, w, !w.Impossible)
			if err != nil || !done {
				return false, err
			}
			if refusal != "" {
				refusals[w.Key()] = refusal
			}
		}
		return true, nil
	}); err != nil {
		return nil, err
	}
	if err := sample("after the workloads"); err != nil {
		return nil, err
	}

	rl, err := c.relabel(ctx, RelabelNode, LayoutMixed3g)
	if err != nil {
		return nil, err
	}
	res.Relabel = *rl
	c.progress("Waiting for the %d pods that need %s's new slices", len(later), RelabelNode)
	if err := c.poll(ctx, 60*time.Second, "the pods on the new MIG slices", func() (bool, error) {
		for _, w := range later {
			if done, _, err := c.settled(ctx, w, true); err != nil || !done {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, err
	}
	// The gauges are recomputed at every GPUNode change; the last pods'
	// report is one.
	if err := sample("after the new MIG layout"); err != nil {
		return nil, err
	}
	if err := c.collect(ctx, res, work, refusals); err != nil {
		return nil, err
	}
	res.Took = time.Since(start)
	return res, nil
}

func (c *Cluster) submit(ctx context.Context, work []Workload) error {
	for _, w := range work {
		if _, err := c.client.CoreV1().Pods(w.Namespace).Create(ctx, w.Pod(), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pod %s: %w", w.Key(), err)
		}
	}
	return nil
}

// settled reports whether w's pod is where the scenario expects it for now:
// Running with its allocation in the GPUNode (wantRunning), or refused by
// the scheduler, with the refusal.
func (c *Cluster) settled(ctx context.Context, w Workload, wantRunning bool) (bool, string, error) {
	p, err := c.client.CoreV1().Pods(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
	if err != nil {
		return false, "", fmt.Errorf("reading pod %s: %w", w.Key(), err)
	}
	if p.Status.Phase == corev1.PodFailed {
		return false, "", fmt.Errorf("pod %s failed on node %s: %s: %s", w.Key(), p.Spec.NodeName, p.Status.Reason, p.Status.Message)
	}
	if !wantRunning {
		if p.Spec.NodeName != "" {
			return false, "", fmt.Errorf("pod %s was placed on %s; expected it to wait", w.Key(), p.Spec.NodeName)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Message != "" {
				return true, cond.Message, nil
			}
		}
		return false, "", nil
	}
	if p.Status.Phase != corev1.PodRunning {
		return false, "", c.scheduler.exited()
	}
	gn, err := c.gpunodes.Get(ctx, p.Spec.NodeName)
	if err != nil {
		return false, "", nil //nolint:nilerr // retried
	}
	return len(allocated(gn, p.Namespace, p.Name)) > 0, "", nil
}

// relabel switches node to layout and waits for the agent to report success
// and the kubelet to advertise the new resources.
func (c *Cluster) relabel(ctx context.Context, node, layout string) (*RelabelResult, error) {
	gn, err := c.gpunodes.Get(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("reading gpunode %s: %w", node, err)
	}
	n, err := c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading node %s: %w", node, err)
	}
	r := &RelabelResult{Node: node, From: n.Labels[LabelMIGConfig], To: layout, Before: Advertised(gn)}
	c.progress("kubectl label node %s %s=%s --overwrite", node, LabelMIGConfig, layout)
	start := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, LabelMIGConfig, layout)
	if _, err := c.client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("labelling node %s: %w", node, err)
	}
	// The state label is polled, so a short "pending" may be missed between
	// two reads; the states seen are reported as seen.
	err = c.poll(ctx, 60*time.Second, node+" to apply "+layout, func() (bool, error) {
		n, err := c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // retried
		}
		state := n.Labels[LabelMIGState]
		if len(r.States) == 0 && state == "success" && time.Since(start) < 200*time.Millisecond {
			return false, nil // the old layout's success, before the agent saw the label
		}
		if state != "" && (len(r.States) == 0 || r.States[len(r.States)-1] != state) {
			r.States = append(r.States, state)
		}
		switch state {
		case "failed":
			return false, fmt.Errorf("node %s: %s=failed (see the agent's log and the node's Events)", node, LabelMIGState)
		case "success":
			gn, err := c.gpunodes.Get(ctx, node)
			if err != nil || gn.Status.Layout.Config != layout {
				return false, nil //nolint:nilerr // retried
			}
			r.After = Advertised(gn)
			for res, count := range r.After {
				q := n.Status.Allocatable[corev1.ResourceName(res)]
				if q.Value() != int64(count) {
					return false, nil
				}
			}
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	r.Took = time.Since(start)
	c.progress("%s=%s after %.1fs; the kubelet now advertises %s", LabelMIGState, strings.Join(r.States, " -> "), r.Took.Seconds(), formatCounts(r.After))
	return r, nil
}

// collect reads the pods, GPUNodes and metrics into res.
func (c *Cluster) collect(ctx context.Context, res *Result, work []Workload, refusals map[string]string) error {
	gnodes := map[string]*v1alpha1.GPUNode{}
	for _, n := range c.Nodes {
		gn, err := c.gpunodes.Get(ctx, n.Spec.Name)
		if err != nil {
			return fmt.Errorf("reading gpunode %s: %w", n.Spec.Name, err)
		}
		gnodes[n.Spec.Name] = gn
	}
	for _, w := range work {
		p, err := c.client.CoreV1().Pods(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading pod %s: %w", w.Key(), err)
		}
		pr := PodResult{Workload: w, Phase: p.Status.Phase, Node: p.Spec.NodeName, Refusal: refusals[w.Key()]}
		if a := p.Annotations[AnnotationDevices]; a != "" {
			pr.Planned = strings.Split(a, ",")
		}
		if gn := gnodes[pr.Node]; gn != nil {
			pr.Devices = decode(gn, allocated(gn, p.Namespace, p.Name))
			pr.Why, pr.Interconnect = explain(w, gn, pr.Devices)
		}
		res.Pods = append(res.Pods, pr)
	}
	for _, n := range c.Nodes {
		gn := gnodes[n.Spec.Name]
		nr := NodeResult{Name: n.Spec.Name, Kind: n.Spec.Kind, Product: gn.Status.Summary.Product,
			Layout: gn.Status.Layout.Config, LayoutState: gn.Status.Layout.State, MetricsURL: n.MetricsURL, Usage: usage(gn)}
		body, err := scrape(n.MetricsURL)
		if err != nil {
			return fmt.Errorf("scraping the agent of %s: %w", n.Spec.Name, err)
		}
		nr.Series, nr.PodSeries, nr.PodsInMetrics = seriesStats(body)
		nr.Preferred = map[string]int{}
		for _, m := range preferredCounter.FindAllStringSubmatch(body, -1) {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return fmt.Errorf("agent of %s: %s: %w", n.Spec.Name, m[0], err)
			}
			nr.Preferred[m[1]] = int(v)
		}
		res.Nodes = append(res.Nodes, nr)
	}
	return nil
}

// allocated are the device IDs a GPUNode reports held by the pod.
func allocated(gn *v1alpha1.GPUNode, ns, name string) []string {
	var out []string
	for _, a := range gn.Status.Allocations {
		if a.Namespace == ns && a.Pod == name {
			out = append(out, a.DeviceIDs...)
		}
	}
	sort.Strings(out)
	return out
}

func decode(gn *v1alpha1.GPUNode, ids []string) []Device {
	var out []Device
	for _, id := range ids {
		uuid, unit, _ := strings.Cut(id, "::")
		for _, g := range gn.Status.GPUs {
			d := Device{ID: id, GPU: int(g.Index), Product: g.Product, NUMA: -1}
			if g.NUMANode != nil {
				d.NUMA = int(*g.NUMANode)
			}
			switch {
			case g.UUID == uuid:
				if g.Sharing != nil && g.Sharing.Replicas > 1 {
					d.Replicas = int(g.Sharing.Replicas)
					n, _ := strconv.Atoi(unit)
					d.Share = n + 1
				}
			case slices.ContainsFunc(g.MIGSlices, func(s v1alpha1.MIGSlice) bool { return s.UUID == uuid }):
				i := slices.IndexFunc(g.MIGSlices, func(s v1alpha1.MIGSlice) bool { return s.UUID == uuid })
				d.MIGProfile = g.MIGSlices[i].Profile
			default:
				continue
			}
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].GPU < out[j].GPU || out[i].GPU == out[j].GPU && out[i].ID < out[j].ID
	})
	return out
}

// usage counts, per advertised resource, the units held and advertised.
func usage(gn *v1alpha1.GPUNode) []Usage {
	held := map[string]int{}
	for _, a := range gn.Status.Allocations {
		held[a.Resource] += len(a.DeviceIDs)
	}
	var out []Usage
	for res, total := range Advertised(gn) {
		out = append(out, Usage{Resource: res, Used: held[res], Total: total})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource < out[j].Resource })
	return out
}

var podLabel = regexp.MustCompile(`[{,]pod="([^"]+)"`)

// seriesStats counts the samples of a /metrics body, those with a pod
// label, and the pods named.
func seriesStats(body string) (series, podSeries int, pods []string) {
	seen := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		series++
		if m := podLabel.FindStringSubmatch(l); m != nil {
			podSeries++
			seen[m[1]] = true
		}
	}
	for p := range seen {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	return series, podSeries, pods
}

var (
	preferredCounter = regexp.MustCompile(`(?m)^tessera_device_plugin_preferred_allocations_total\{source="([a-z]+)"\} (\S+)$`)
	fragGauge        = regexp.MustCompile(`(?m)^tessera_scheduler_fragmentation_gpus\{pool=""\} (\S+)$`)
	freeGauge        = regexp.MustCompile(`(?m)^tessera_scheduler_free_gpus\{pool=""\} (\S+)$`)
)

// fragmentation reads the scheduler's cluster-wide gauges once the
// scheduler has seen the latest GPUNodes (it recomputes them at each change).
func (c *Cluster) fragmentation(ctx context.Context) (FragmentationSample, error) {
	var f FragmentationSample
	err := c.poll(ctx, 15*time.Second, "the scheduler's fragmentation gauges", func() (bool, error) {
		body, err := scrape(c.SchedulerMetricsURL)
		if err != nil {
			return false, c.scheduler.exited()
		}
		fm, free := fragGauge.FindStringSubmatch(body), freeGauge.FindStringSubmatch(body)
		if fm == nil || free == nil {
			return false, nil
		}
		f.FragmentedGPUs, _ = strconv.ParseFloat(fm[1], 64)
		f.FreeGPUs, _ = strconv.ParseFloat(free[1], 64)
		return true, nil
	})
	return f, err
}

func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
