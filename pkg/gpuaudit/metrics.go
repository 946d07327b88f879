package gpuaudit

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up                *prometheus.GaugeVec
	opens             *prometheus.CounterVec
	hostOpens         *prometheus.CounterVec
	unauthorized      *prometheus.CounterVec
	mknods            *prometheus.CounterVec
	unauthorizedMknod *prometheus.CounterVec
	droppedSeries     prometheus.Counter
	lost              prometheus.CounterFunc
	lostCount         atomic.Uint64
}

func newMetrics() *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tessera_gpu_audit_up",
			Help: "1 if the GPU access audit runs, on the kernel hook named by hook (cgroup_device, tp_btf, raw_tracepoint, syscall_tracepoint); 0 if not, with the reason (not_started, no_privileges, no_btf, no_hook, no_tracefs, no_cgroup2, load_failed, read_failed, internal_error, stopped).",
		}, []string{"hook", "reason"}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_gpu_audit_opens_total",
			Help: "Opens of NVIDIA devices seen by the audit (on the cgroup_device hook: read/write permission checks, i.e. open attempts), by verdict: allowed (a pod's allocated device or a control node), unauthorized, host (a process outside every pod), trusted (a pod of a trusted namespace, the agent), unattributed (owner unknown).",
		}, []string{"class"}),
		hostOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_gpu_audit_host_opens_total",
			Help: "Opens of NVIDIA devices by host processes, by program (nvidia-smi, nv-hostengine, nvidia-persistenced, dcgm-exporter, dcgmi, nvidia-cuda-mps-*, gpu-agent, other).",
		}, []string{"process"}),
		unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_gpu_unauthorized_open_total",
			Help: "Opens of an NVIDIA device by a pod the kubelet did not allocate it to (gpu is the GPU index, or the control node's name for pods without any GPU).",
		}, []string{"namespace", "pod", "container", "gpu"}),
		mknods: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_gpu_audit_mknods_total",
			Help: "Device nodes of NVIDIA devices made with mknod, seen by the audit on the cgroup_device hook only, by verdict (the classes of tessera_gpu_audit_opens_total).",
		}, []string{"class"}),
		unauthorizedMknod: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_gpu_unauthorized_mknod_total",
			Help: "Device nodes of an NVIDIA device made with mknod by a pod the kubelet did not allocate it to (cgroup_device hook only; gpu as in tessera_gpu_unauthorized_open_total).",
		}, []string{"namespace", "pod", "container", "gpu"}),
		droppedSeries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tessera_gpu_audit_series_dropped_total",
			Help: "Unauthorized opens or mknods not given a tessera_gpu_unauthorized_open_total or tessera_gpu_unauthorized_mknod_total series because they already have the configured maximum of series between them.",
		}),
	}
	m.lost = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tessera_gpu_audit_lost_events_total",
		Help: "Open events the kernel dropped because the ring buffer to the agent was full (read every LostInterval).",
	}, func() float64 { return float64(m.lostCount.Load()) })
	for _, c := range []Class{ClassAllowed, ClassUnauthorized, ClassHost, ClassTrusted, ClassUnattributed} {
		m.opens.WithLabelValues(string(c))
		m.mknods.WithLabelValues(string(c))
	}
	return m
}

func (m *metrics) setStatus(s Status) {
	m.up.Reset()
	if s.Up {
		m.up.WithLabelValues(string(s.Hook), "").Set(1)
		return
	}
	m.up.WithLabelValues("none", s.Reason).Set(0)
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.up, m.opens, m.hostOpens, m.unauthorized, m.mknods, m.unauthorizedMknod, m.droppedSeries, m.lost} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering gpu audit metrics: %w", err)
		}
	}
	return nil
}
