package scheduler

import (
	"strings"
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// The scheduler's GPU metrics. They are registered once, in the scheduler's
// legacy registry, because that is the registry kube-scheduler serves on its
// /metrics; every profile's plugin instance adds to the same series.
var (
	planMismatches = metrics.NewCounterVec(&metrics.CounterOpts{
		Name:           "tessera_scheduler_plan_mismatch_total",
		Help:           "Pods whose devices, as the gpu-agent reported them, differ from the devices the scheduler planned (reason: devices_differ — the kubelet gave other devices; devices_taken — the planned devices were reported held by another pod).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	gpuNodesInconsistent = metrics.NewCounterVec(&metrics.CounterOpts{
		Name:           "tessera_scheduler_gpunode_inconsistent_total",
		Help:           "GPUNode versions the scheduler refused to trust (the node is treated as stale), by node.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node"})
	extensionDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Name:           "tessera_scheduler_plugin_duration_seconds",
		Help:           "Duration of the Tessera plugin's work at each extension point, per call.",
		Buckets:        metrics.ExponentialBuckets(0.000005, 2.5, 14),
		StabilityLevel: metrics.ALPHA,
	}, []string{"extension_point"})
)

// The gauges of the GPUNodes, their free capacity, its fragmentation and
// what is stranded. gpuGauges computes them when /metrics is scraped.
var (
	gpuNodesDesc = metrics.NewDesc("tessera_scheduler_gpunodes",
		"GPUNodes the scheduler knows, by state: fresh (scored), stale (heartbeat older than staleAfter) or inconsistent.",
		[]string{"state"}, nil, metrics.ALPHA, "")
	fragmentationDesc = metrics.NewDesc("tessera_scheduler_fragmentation_gpus",
		"Expected fragmentation of the free GPU capacity against the learned target workload, in GPUs, for the cluster (pool=\"\") and per node pool (the GPU product).",
		[]string{"pool"}, nil, metrics.ALPHA, "")
	freeGPUsDesc = metrics.NewDesc("tessera_scheduler_free_gpus",
		"Free healthy GPU capacity, in GPUs, of fresh GPUNodes, for the cluster (pool=\"\") and per node pool (the GPU product).",
		[]string{"pool"}, nil, metrics.ALPHA, "")
	strandedGPUsDesc = metrics.NewDesc("tessera_scheduler_stranded_gpus",
		"Free GPU capacity, in GPUs, that pods cannot use, by cause: no_cpu (free GPUs on nodes without a free CPU, as of the node's last scheduling cycle), wrong_product (free capacity weighted by the share of the learned workload whose required nvidia.com/gpu.product excludes the GPU's product), share_holes (free units on partly used shared GPUs), broken_nvlink (free whole GPUs of an NVLink machine with no free NVLink pair left), unhealthy (GPUs marked unhealthy).",
		[]string{"cause"}, nil, metrics.ALPHA, "")
)

// gpuGauges computes the GPU gauges from a plugin's model when /metrics is
// scraped. They were recomputed at every GPUNode event before: a pass over
// every node per event is a pass over every node per node per heartbeat
// round (O(nodes²): 2.1 s of CPU to take 1,000 GPUNodes in, about a core
// at 5,000 nodes heartbeating every 30 s), under the lock every extension
// point takes. A scrape every 15 or 30 s costs one pass, and the values
// are those of the scrape's moment, staleness included.
type gpuGauges struct {
	metrics.BaseStableCollector
	mu sync.Mutex
	p  *Plugin
}

// gauges serves the scheduler's /metrics (the legacy registry): it reports
// the model of the plugin instance the scheduler created last (New). Every
// profile's instance reads the same GPUNodes.
var gauges = &gpuGauges{}

// use makes the collector report p's model.
func (g *gpuGauges) use(p *Plugin) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.p = p
}

// DescribeWithStability implements metrics.StableCollector.
func (g *gpuGauges) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- gpuNodesDesc
	ch <- fragmentationDesc
	ch <- freeGPUsDesc
	ch <- strandedGPUsDesc
}

// CollectWithStability implements metrics.StableCollector.
func (g *gpuGauges) CollectWithStability(ch chan<- metrics.Metric) {
	g.mu.Lock()
	p := g.p
	g.mu.Unlock()
	if p == nil {
		return
	}
	s := p.gaugeSample()
	for state, v := range s.nodes {
		ch <- metrics.NewLazyConstMetric(gpuNodesDesc, metrics.GaugeValue, v, state)
	}
	for pool, v := range s.frag {
		ch <- metrics.NewLazyConstMetric(fragmentationDesc, metrics.GaugeValue, v, pool)
	}
	for pool, v := range s.free {
		ch <- metrics.NewLazyConstMetric(freeGPUsDesc, metrics.GaugeValue, v, pool)
	}
	for cause, v := range s.stranded {
		ch <- metrics.NewLazyConstMetric(strandedGPUsDesc, metrics.GaugeValue, v, cause)
	}
}

// gaugeSample is the gauges' values, by label value.
type gaugeSample struct {
	nodes, frag, free, stranded map[string]float64
}

// strandedCauses are the cause label values of tessera_scheduler_stranded_gpus.
var strandedCauses = []string{"no_cpu", "wrong_product", "share_holes", "broken_nvlink", "unhealthy"}

var registerMetrics sync.Once

// filterDuration is extensionDuration's Filter child, resolved once: Filter
// runs for every node of every pod it is not skipped for, in 16 goroutines,
// and resolving the label takes the vector's lock and hashes the value.
var filterDuration metrics.ObserverMetric

func mustRegisterMetrics() {
	registerMetrics.Do(func() {
		legacyregistry.MustRegister(planMismatches, gpuNodesInconsistent, extensionDuration)
		legacyregistry.CustomMustRegister(gauges)
		filterDuration = extensionDuration.WithLabelValues("Filter")
	})
}

// observeFilter records the duration of one Filter call since start.
func observeFilter(start time.Time) {
	filterDuration.Observe(time.Since(start).Seconds())
}

// observe records the duration of one extension point call since start.
func observe(point string, start time.Time) {
	extensionDuration.WithLabelValues(point).Observe(time.Since(start).Seconds())
}

// gaugeSample computes the GPUNode, fragmentation, free and stranded-GPU
// gauges from the model, under the plugin's lock (the fragmentation
// measures are cached in the nodes).
func (p *Plugin) gaugeSample() gaugeSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	var fresh, stale, bad int
	frag := map[string]float64{}
	free := map[string]float64{}
	stranded := map[string]float64{}
	for _, cause := range strandedCauses {
		stranded[cause] = 0
	}
	for _, e := range p.c.nodes {
		switch {
		case e.model == nil || e.cache == nil:
			bad++
			continue
		case now.Sub(e.model.heartbeat) > p.c.staleAfter:
			stale++
			continue
		}
		fresh++
		pool := strings.Join(e.model.products, ",")
		f := p.c.scorer.Fragmentation(e.cache)
		_, fr := e.cache.Capacity()
		frag[pool] += f
		frag[""] += f
		free[pool] += fr
		free[""] += fr
		st := e.cache.State()
		if e.cpuKnown && st.CPUFree == 0 {
			stranded["no_cpu"] += fr
		}
		stranded["wrong_product"] += p.c.scorer.ProductStranded(e.cache)
		var wholeFree []int
		nvlinkMachine := false
		for i, g := range st.GPUs {
			if !g.Healthy {
				stranded["unhealthy"]++
				continue
			}
			if g.Mode == scoring.ModeShared && g.ShareFree > 0 && g.ShareFree < g.ShareTotal {
				stranded["share_holes"] += e.cache.GPUFree(i)
			}
			if g.Mode == scoring.ModeWhole && !g.Used {
				wholeFree = append(wholeFree, i)
			}
			for j := range st.GPUs {
				if j != i && st.Topology.Links[i][j].NVLinks > 0 {
					nvlinkMachine = true
				}
			}
		}
		if nvlinkMachine && len(wholeFree) >= 2 {
			paired := false
			for _, a := range wholeFree {
				for _, b := range wholeFree {
					if a != b && st.Topology.Links[a][b].NVLinks > 0 {
						paired = true
					}
				}
			}
			if !paired {
				stranded["broken_nvlink"] += float64(len(wholeFree))
			}
		}
	}
	return gaugeSample{
		nodes: map[string]float64{"fresh": float64(fresh), "stale": float64(stale), "inconsistent": float64(bad)},
		frag:  frag, free: free, stranded: stranded,
	}
}
