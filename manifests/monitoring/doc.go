// Package monitoring holds the Grafana dashboard, the PrometheusRule alerts
// and the PodMonitors for Tessera's gpu-agent and gpu-scheduler, with the
// ServiceAccount, token Secret and RBAC the scheduler's scrape authenticates
// with (manifests/monitoring_apply_test.go applies and checks those). Its
// tests check the rules with promtool, the dashboard's shape, and evaluate
// every dashboard query and alert expression against a real Prometheus
// scraping the agent's exporter on a simulated DGX H100.
package monitoring
