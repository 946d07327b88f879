package inventory

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	writes *prometheus.CounterVec
	errors *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_inventory_writes_total",
			Help: "Writes of the node's GPU inventory by object (gpunode, labels) and reason (metadata, change, heartbeat).",
		}, []string{"object", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_inventory_write_errors_total",
			Help: "Failed writes of the node's GPU inventory by object (gpunode, labels).",
		}, []string{"object"}),
	}
}

// Register adds the publisher's metrics to reg.
func (p *Publisher) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{p.metrics.writes, p.metrics.errors} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
