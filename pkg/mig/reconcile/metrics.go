package reconcile

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the layout manager's Prometheus metrics.
type Metrics struct {
	changes       *prometheus.CounterVec
	state         *prometheus.GaugeVec
	applyDuration prometheus.Histogram
	drainDuration prometheus.Histogram
	evictions     prometheus.Counter
}

// NewMetrics registers the layout manager's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	buckets := []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	m := &Metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_mig_layout_changes_total",
			Help: "MIG layout changes by outcome: success (applied or already in place) or failure (the previous layout stays).",
		}, []string{"result"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tessera_mig_layout_state",
			Help: "1 for the MIG config the node label asks for and the state of its change (pending, success, failed).",
		}, []string{"config", "state"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tessera_mig_layout_apply_duration_seconds",
			Help:    "Time applying a MIG layout to the GPUs, after they were freed of pods.",
			Buckets: buckets,
		}),
		drainDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tessera_mig_layout_drain_duration_seconds",
			Help:    "Time waiting for pods to release the GPUs a MIG layout change touches.",
			Buckets: buckets,
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tessera_mig_layout_evictions_total",
			Help: "Pods evicted to free GPUs for a MIG layout change (drain policy evict).",
		}),
	}
	for _, c := range []prometheus.Collector{m.changes, m.state, m.applyDuration, m.drainDuration, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.changes.WithLabelValues("success")
	m.changes.WithLabelValues("failure")
	return m, nil
}

func (m *Metrics) setState(config, state string) {
	if m == nil {
		return
	}
	m.state.Reset()
	m.state.WithLabelValues(config, state).Set(1)
}

func (m *Metrics) outcome(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.changes.WithLabelValues("success").Inc()
	} else {
		m.changes.WithLabelValues("failure").Inc()
	}
}

func (m *Metrics) applied(d time.Duration) {
	if m != nil {
		m.applyDuration.Observe(d.Seconds())
	}
}

func (m *Metrics) drained(d time.Duration) {
	if m != nil {
		m.drainDuration.Observe(d.Seconds())
	}
}

func (m *Metrics) evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}
