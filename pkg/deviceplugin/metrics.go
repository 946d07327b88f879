package deviceplugin

import (
	"github.com/prometheus/client_golang/prometheus"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Metrics are the device plugin's Prometheus metrics: config outcomes and
// the devices advertised per resource and health.
type Metrics struct {
	configApplied *prometheus.CounterVec
	configActive  *prometheus.GaugeVec
}

// NewMetrics registers the device plugin's metrics with reg, including a
// collector of the devices mgr advertises.
func NewMetrics(reg prometheus.Registerer, mgr *Manager) (*Metrics, error) {
	m := &Metrics{
		configApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tessera_device_plugin_config_reloads_total",
			Help: "Device-plugin configurations applied (result=success) or refused (result=failure, the last good one keeps serving).",
		}, []string{"result"}),
		configActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tessera_device_plugin_config_active",
			Help: "1 for the device-plugin configuration serving now.",
		}, []string{"config"}),
	}
	for _, c := range []prometheus.Collector{m.configApplied, m.configActive, &deviceCollector{mgr: mgr}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.configApplied.WithLabelValues("success")
	m.configApplied.WithLabelValues("failure")
	return m, nil
}

func (m *Metrics) applied(name string) {
	if m == nil {
		return
	}
	m.configApplied.WithLabelValues("success").Inc()
	m.configActive.Reset()
	m.configActive.WithLabelValues(displayName(name)).Set(1)
}

func (m *Metrics) failed() {
	if m == nil {
		return
	}
	m.configApplied.WithLabelValues("failure").Inc()
}

var devicesDesc = prometheus.NewDesc("tessera_device_plugin_devices",
	"Device IDs advertised to the kubelet, per resource and health.", []string{"resource", "health"}, nil)

var (
	registeredDesc = prometheus.NewDesc("tessera_device_plugin_registered",
		"1 when every configured resource is registered with the kubelet, 0 while registration is being retried.", nil, nil)
	registerFailuresDesc = prometheus.NewDesc("tessera_device_plugin_registration_failures_total",
		"Registration attempts the kubelet refused or did not answer (each is retried with backoff).", nil, nil)
	preferredDesc = prometheus.NewDesc("tessera_device_plugin_preferred_allocations_total",
		"Preferred allocations answered to the kubelet, by source: plan (the devices gpu-scheduler planned for the pod being admitted) or own (the allocator's choice).", []string{"source"}, nil)
)

// deviceCollector reports the manager's in-memory resources; it does no I/O.
type deviceCollector struct{ mgr *Manager }

func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- devicesDesc
	ch <- registeredDesc
	ch <- registerFailuresDesc
	ch <- preferredDesc
}

func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.mgr.Resources() {
		healthy := 0
		for _, d := range r.Devices {
			if c.mgr.healthy(d.UUID) {
				healthy++
			}
		}
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(healthy), r.Name, api.Healthy)
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(len(r.Devices)-healthy), r.Name, api.Unhealthy)
	}
	registered, failures := c.mgr.RegistrationStatus()
	up := 0.0
	if registered {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(registeredDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(registerFailuresDesc, prometheus.CounterValue, float64(failures))
	for source, n := range c.mgr.PreferredAllocations() {
		ch <- prometheus.MustNewConstMetric(preferredDesc, prometheus.CounterValue, float64(n), source)
	}
}
