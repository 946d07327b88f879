// Package monitoring holds the Grafana dashboard, the PrometheusRule alerts
// and the PodMonitor for Tessera's gpu-agent. Its tests check the rules with
// promtool, the dashboard's shape, and evaluate every dashboard query and
// alert expression against a real Prometheus scraping the agent's exporter on
// a simulated DGX H100.
package monitoring
