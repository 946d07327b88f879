// Package telemetry exports GPU telemetry in dcgm-exporter's metric names,
// units and labels, attributed to the pods that hold each device, together
// with XID counters, fatal-XID Node Events and Tessera's own health, MIG
// layout, pod and collector metrics.
//
// It owns the collection loop and the /metrics handler: every Interval the
// Exporter samples the backend once, resolves pod attribution from a cached
// PodResources view, runs its collectors (one per file, collect_*.go) and
// encodes the result once into an immutable snapshot. /metrics only writes
// that pre-encoded snapshot (plus any extra gatherers the caller passes), so
// a scrape never calls NVML or the kubelet and a slow collector never blocks
// a scrape: the previous snapshot keeps being served.
//
// It must not read flags or environment variables, talk to the kubelet or
// NVML directly (it uses the narrow Source, PodLookup and HealthLookup
// interfaces), or register anything in a global registry.
package telemetry
