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
	gpuNodes = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "tessera_scheduler_gpunodes",
		Help:           "GPUNodes the scheduler knows, by state: fresh (scored), stale (heartbeat older than staleAfter) or inconsistent.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"state"})
	fragmentation = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "tessera_scheduler_fragmentation_gpus",
		Help:           "Expected fragmentation of the free GPU capacity against the learned target workload, in GPUs, for the cluster (pool=\"\") and per node pool (the GPU product).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	freeGPUs = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "tessera_scheduler_free_gpus",
		Help:           "Free healthy GPU capacity, in GPUs, of fresh GPUNodes, for the cluster (pool=\"\") and per node pool (the GPU product).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	strandedGPUs = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "tessera_scheduler_stranded_gpus",
		Help:           "Free GPU capacity, in GPUs, that pods cannot use, by cause: no_cpu (free GPUs on nodes without a free CPU, as of the node's last scheduling cycle), wrong_product (free capacity weighted by the share of the learned workload whose required nvidia.com/gpu.product excludes the GPU's product), share_holes (free units on partly used shared GPUs), broken_nvlink (free whole GPUs of an NVLink machine with no free NVLink pair left), unhealthy (GPUs marked unhealthy).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"cause"})
	extensionDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Name:           "tessera_scheduler_plugin_duration_seconds",
		Help:           "Duration of the Tessera plugin's work at each extension point, per call.",
		Buckets:        metrics.ExponentialBuckets(0.000005, 2.5, 14),
		StabilityLevel: metrics.ALPHA,
	}, []string{"extension_point"})
)

// strandedCauses are the cause label values of tessera_scheduler_stranded_gpus.
var strandedCauses = []string{"no_cpu", "wrong_product", "share_holes", "broken_nvlink", "unhealthy"}

var registerMetrics sync.Once

// filterDuration is extensionDuration's Filter child, resolved once: Filter
// runs for every node of every pod it is not skipped for, in 16 goroutines,
// and resolving the label takes the vector's lock and hashes the value.
var filterDuration metrics.ObserverMetric

func mustRegisterMetrics() {
	registerMetrics.Do(func() {
		legacyregistry.MustRegister(planMismatches, gpuNodesInconsistent, gpuNodes, fragmentation, freeGPUs, strandedGPUs, extensionDuration)
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

// refreshGauges recomputes the GPUNode, fragmentation and stranded-GPU
// gauges from the model. Call with the plugin's lock held.
func (p *Plugin) refreshGauges() {
	now := p.clock.Now()
	var fresh, stale, bad int
	frag := map[string]float64{}
	free := map[string]float64{}
	stranded := map[string]float64{}
	for _, cause := range strandedCauses {
		stranded[cause] = 0
	}
	for name, e := range p.c.nodes {
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
		_ = name
	}
	gpuNodes.WithLabelValues("fresh").Set(float64(fresh))
	gpuNodes.WithLabelValues("stale").Set(float64(stale))
	gpuNodes.WithLabelValues("inconsistent").Set(float64(bad))
	fragmentation.Reset()
	freeGPUs.Reset()
	for pool, v := range frag {
		fragmentation.WithLabelValues(pool).Set(v)
	}
	for pool, v := range free {
		freeGPUs.WithLabelValues(pool).Set(v)
	}
	for cause, v := range stranded {
		strandedGPUs.WithLabelValues(cause).Set(v)
	}
}
