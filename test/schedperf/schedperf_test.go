package schedperf

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	_ "k8s.io/component-base/logs/json/register" // scheduler_perf's -logging-format=json
	"k8s.io/component-base/metrics/legacyregistry"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	perf "k8s.io/kubernetes/test/integration/scheduler_perf"
	"k8s.io/kubernetes/test/utils/ktesting"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	tessera "github.com/tessera-gpu/tessera/pkg/scheduler"
)

const topic = "tessera"

// rounds is how many of the newest result files the report covers: make
// bench-scheduler runs the benchmark once per round, each round in a
// fresh process with the default profile then Tessera's, so that the two
// profiles' runs alternate (D T D T D T). With -count N in one process
// instead, Go runs a test case's N runs back to back (D D D T T T): the
// machine's load drifts over the minutes between them, and the later
// profile runs in a process that ran the earlier ones.
var rounds = flag.Int("tessera-rounds", 1, "report the throughput ratio over the newest `N` scheduler_perf result files in -data-items-dir (one per round)")

func TestMain(m *testing.M) {
	if err := perf.InitTests(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// scheduler_perf writes its results (JSON for perfdash) into
	// -data-items-dir, the current directory by default.
	if f := flag.Lookup("data-items-dir"); f != nil && f.Value.String() == "" {
		dir, err := os.MkdirTemp("", "schedperf-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = f.Value.Set(dir)
	}
	os.Exit(m.Run())
}

// run is one workload's Tessera plugin, as the benchmark observes it.
type run struct {
	workload string
	pods     int
	// planned counts the pods whose devices Tessera planned and wrote
	// (Bind, or PreBind where Tessera does not bind): every GPU pod of the
	// workload, else Tessera did no work.
	planned atomic.Int64
}

// countingPlugin is Tessera's plugin with the writes of its plans counted;
// every other extension point is the plugin's own (promoted).
type countingPlugin struct {
	*tessera.Plugin
	r *run
}

func (p countingPlugin) PreBind(ctx context.Context, s fwk.CycleState, pod *corev1.Pod, node string) *fwk.Status {
	st := p.Plugin.PreBind(ctx, s, pod, node)
	if st.IsSuccess() {
		p.r.planned.Add(1)
	}
	return st
}

func (p countingPlugin) Bind(ctx context.Context, s fwk.CycleState, pod *corev1.Pod, node string) *fwk.Status {
	st := p.Plugin.Bind(ctx, s, pod, node)
	if st.IsSuccess() {
		p.r.planned.Add(1)
	}
	return st
}

// BenchmarkPerfScheduling runs performance-config.yaml's GPU workloads under
// the default profile and under Tessera's, then prints each workload's
// throughputs and their ratio (Tessera / default).
func BenchmarkPerfScheduling(b *testing.B) {
	var (
		mu   sync.Mutex
		runs []*run
		cur  *run
	)
	registry := frameworkruntime.Registry{
		tessera.Name: func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
			p, err := tessera.New(ctx, obj, h)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			cur = &run{}
			runs = append(runs, cur)
			return countingPlugin{Plugin: p.(*tessera.Plugin), r: cur}, nil
		},
	}
	if !slices.Contains(perf.PluginNames, tessera.Name) { // -count runs this again
		perf.PluginNames = append(perf.PluginNames, tessera.Name)
	}
	perf.RunBenchmarkPerfScheduling(b, "performance-config.yaml", topic, registry,
		perf.WithPreRunFn(func(ktesting.TContext, *perf.Workload) (func(), error) {
			mu.Lock()
			cur = nil
			mu.Unlock()
			return nil, nil
		}),
		// The GPUNode CRD, installed once the apiserver runs. Tessera's
		// plugin started before it and lists GPUNodes once it is served.
		perf.WithPrepareFn(func(tCtx ktesting.TContext) error {
			return inventorytest.InstallCRD(tCtx, tCtx.RESTConfig())
		}),
		// Every node the workload created gets the GPUNode its gpu-agent
		// would publish; with Tessera in the profile, wait until the
		// plugin sees them all (fresh), so that it judges every node.
		perf.WithNodeUpdateFn(func(tCtx ktesting.TContext, _ *scheduler.Scheduler, w *perf.Workload, nodes *corev1.NodeList) error {
			if err := publishGPUNodes(tCtx, nodes); err != nil {
				return err
			}
			mu.Lock()
			r := cur
			if r != nil {
				r.workload = w.Name
				r.pods = workloadPods(w)
			}
			mu.Unlock()
			if r == nil {
				return nil
			}
			return waitFreshGPUNodes(tCtx, len(nodes.Items))
		}),
	)
	for _, r := range runs {
		if r.workload == "" {
			continue
		}
		if got := r.planned.Load(); got != int64(r.pods) {
			b.Errorf("%s: Tessera planned the devices of %d pods, want all %d GPU pods", r.workload, got, r.pods)
		}
	}
	if err := reportRatios(b); err != nil {
		b.Error(err)
	}
}

// workloadPods is the number of GPU pods a workload creates, which its
// name ends with ("1000Nodes_5000Pods"; scheduler_perf's params are not
// exported).
func workloadPods(w *perf.Workload) int {
	_, last, _ := strings.Cut(w.Name, "Nodes_")
	n, err := strconv.Atoi(strings.TrimSuffix(last, "Pods"))
	if err != nil {
		return -1
	}
	return n
}

// publishGPUNodes creates each node's GPUNode (metadata, then status, as
// the agent applies them) from its perf.tessera.dev/shape label.
func publishGPUNodes(tCtx ktesting.TContext, nodes *corev1.NodeList) error {
	gc, err := client.NewForConfig(tCtx.RESTConfig())
	if err != nil {
		return err
	}
	now := time.Now()
	errs := make(chan error, len(nodes.Items))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range nodes.Items {
		n := &nodes.Items[i]
		gn, err := gpuNodeFor(n, now)
		if err != nil {
			return err
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			opts := client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true}
			if _, err := gc.Apply(tCtx, gn, opts); err != nil {
				errs <- fmt.Errorf("applying gpunode %s: %w", gn.Name, err)
				return
			}
			if _, err := gc.ApplyStatus(tCtx, gn, opts); err != nil {
				errs <- fmt.Errorf("applying gpunode %s status: %w", gn.Name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// waitFreshGPUNodes waits until Tessera's plugin counts n fresh GPUNodes
// (its tessera_scheduler_gpunodes gauge).
func waitFreshGPUNodes(tCtx ktesting.TContext, n int) error {
	var got float64
	err := wait.PollUntilContextTimeout(tCtx, 100*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		mfs, err := legacyregistry.DefaultGatherer.Gather()
		if err != nil {
			return false, err
		}
		got = 0
		for _, mf := range mfs {
			if mf.GetName() != "tessera_scheduler_gpunodes" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "state" && l.GetValue() == "fresh" {
						got = m.GetGauge().GetValue()
					}
				}
			}
		}
		return int(got) == n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Tessera to see %d fresh gpunodes (sees %v): %w", n, got, err)
	}
	return nil
}

// dataItems is scheduler_perf's JSON result file.
type dataItems struct {
	DataItems []struct {
		Data   map[string]float64 `json:"data"`
		Unit   string             `json:"unit"`
		Labels map[string]string  `json:"labels"`
	} `json:"dataItems"`
}

// reportRatios reads the result file scheduler_perf just wrote and prints
// each workload's average throughput under both profiles and the ratio.
func reportRatios(b *testing.B) error {
	dir := flag.Lookup("data-items-dir").Value.String()
	files, err := filepath.Glob(filepath.Join(dir, "BenchmarkPerfScheduling_benchmark_"+topic+"_*.json"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no scheduler_perf result in %s: %w", dir, err)
	}
	sort.Strings(files) // the names end in the date and time
	if *rounds < 1 || *rounds > len(files) {
		return fmt.Errorf("-tessera-rounds=%d: %s holds %d scheduler_perf results, want 1 to %d rounds", *rounds, dir, len(files), len(files))
	}
	files = files[len(files)-*rounds:]
	var items dataItems
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var round dataItems
		if err := json.Unmarshal(data, &round); err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		items.DataItems = append(items.DataItems, round.DataItems...)
	}
	// Name is BenchmarkPerfScheduling/<test case>/<workload>/<collector>;
	// each test case has one result per run (-count) and round, in the
	// order they ran.
	tput := map[string]map[string][]map[string]float64{} // workload -> case -> runs
	for _, it := range items.DataItems {
		if it.Labels["Metric"] != "SchedulingThroughput" {
			continue
		}
		parts := strings.Split(it.Labels["Name"], "/")
		if len(parts) < 3 {
			continue
		}
		tc, w := parts[len(parts)-3], parts[len(parts)-2]
		// A test case's name after its profile names the variant
		// (GPUDefaultWhole, GPUTesseraWhole: the whole-GPU control).
		for _, profile := range []string{"GPUDefault", "GPUTessera"} {
			if v, ok := strings.CutPrefix(tc, profile); ok && v != "" {
				tc, w = profile, w+"/"+strings.ToLower(v)
			}
		}
		if tput[w] == nil {
			tput[w] = map[string][]map[string]float64{}
		}
		tput[w][tc] = append(tput[w][tc], it.Data)
	}
	var ws []string
	for w := range tput {
		ws = append(ws, w)
	}
	slices.Sort(ws)
	fmt.Fprintf(os.Stdout, "\nscheduler_perf throughput (pods/s), %s\n", strings.Join(files, " "))
	fmt.Fprintf(os.Stdout, "%-28s %-10s %10s %10s %10s   %s\n", "workload", "profile", "average", "p50", "p90", "the runs' averages, sorted (the row is the median run)")
	for _, w := range ws {
		med := map[string]float64{}
		for _, row := range []struct{ name, tc string }{{"default", "GPUDefault"}, {"tessera", "GPUTessera"}} {
			runs := tput[w][row.tc]
			if len(runs) == 0 {
				continue
			}
			// The run whose average is the median (the lower middle one
			// for an even count) gives the row.
			slices.SortStableFunc(runs, func(a, b map[string]float64) int { return cmp.Compare(a["Average"], b["Average"]) })
			m := runs[(len(runs)-1)/2]
			med[row.name] = m["Average"]
			avgs := make([]float64, len(runs))
			for i, r := range runs {
				avgs[i] = r["Average"]
			}
			fmt.Fprintf(os.Stdout, "%-28s %-10s %10.1f %10.1f %10.1f   %s\n", w, row.name, m["Average"], m["Perc50"], m["Perc90"], formatValues(avgs))
		}
		if d, t := med["default"], med["tessera"]; d > 0 && t > 0 {
			fmt.Fprintf(os.Stdout, "%-28s %-10s %10.3f   (median Tessera / median default; target >= 0.9)\n", w, "ratio", t/d)
			b.Logf("%s: Tessera/default throughput ratio %.3f", w, t/d)
		}
	}
	return nil
}

// formatValues prints pods/s with the precision of the table.
func formatValues(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strings.Join(parts, ", ")
}
