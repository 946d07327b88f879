package podresources

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up          prometheus.GaugeFunc
	lastSuccess prometheus.GaugeFunc
	holders     prometheus.GaugeFunc
	duration    prometheus.Gauge
	errors      *prometheus.CounterVec
}

func newMetrics(c *Cache) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tessera_podresources_up",
			Help: "1 if the last List call to the kubelet PodResources API succeeded, 0 if not (pod labels may be stale or missing).",
		}, func() float64 {
			if c.Status().OK {
				return 1
			}
			return 0
		}),
		lastSuccess: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tessera_podresources_last_success_timestamp_seconds",
			Help: "Unix time of the last successful List call to the kubelet PodResources API; 0 if none yet.",
		}, func() float64 {
			s := c.Status()
			if s.Updated.IsZero() {
				return 0
			}
			return float64(s.Updated.UnixNano()) / 1e9
		}),
		holders: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tessera_podresources_device_holders",
			Help: "Number of (container, device) assignments in the cached PodResources view.",
		}, func() float64 {
			c.mu.RLock()
			defer c.mu.RUnlock()
			return float64(len(c.all))
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tessera_podresources_refresh_duration_seconds",
			Help: "Duration of the last refresh of the PodResources view, successful or not.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_podresources_errors_total",
			Help: "Failed refreshes of the PodResources view by reason (socket_not_found, socket_error, timeout, unavailable, response_too_large, list_failed).",
		}, []string{"reason"}),
	}
	for _, r := range []string{ReasonSocketNotFound, ReasonSocketError, ReasonTimeout, ReasonUnavailable, ReasonResponseTooLarge, ReasonListFailed} {
		m.errors.WithLabelValues(r)
	}
	return m
}

// Register adds the cache's metrics to reg: tessera_podresources_up,
// tessera_podresources_last_success_timestamp_seconds,
// tessera_podresources_device_holders,
// tessera_podresources_refresh_duration_seconds and
// tessera_podresources_errors_total{reason}.
func (c *Cache) Register(reg prometheus.Registerer) error {
	for _, col := range []prometheus.Collector{c.metrics.up, c.metrics.lastSuccess, c.metrics.holders, c.metrics.duration, c.metrics.errors} {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("registering pod resources metrics: %w", err)
		}
	}
	return nil
}
