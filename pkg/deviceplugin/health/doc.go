// Package health keeps the health of each physical GPU as a state machine fed
// by device events (XID, ECC, GPU lost), backend errors and detected resets,
// under a configurable XID policy. The XID catalogue it draws on is
// pkg/gpu/xid; the states it reports are pkg/gpu's HealthState and
// HealthStatus, so that readers of health need not import this package.
//
// Each GPU is Healthy or Unhealthy. A fatal event makes it Unhealthy; it is
// Healthy again when no fatal event has arrived for Policy.RecoveryPeriod
// (Tick) or when a reset is detected (ObserveReset). A lost GPU (it fell off
// the bus or stopped answering) does not recover with time, because a GPU that
// is gone sends no further events to restart the period; it recovers on a
// detected reset. Health is never a one-way latch.
//
// Health is kept per physical GPU: a fatal XID reported inside a MIG instance
// makes the whole GPU unhealthy, and the GPU's MIG devices follow it
// (Tracker.Healthy answers for a MIG UUID with its parent's state). NVIDIA's
// device plugin instead marks only the MIG device whose GPU and compute
// instance IDs match the event. Tessera's choice is conservative on purpose:
// the XIDs that stay fatal under the default policy report hardware or driver
// faults (memory, NVLink, GSP, the bus), and the slices of a GPU share its
// memory controllers, L2 and firmware; the application-level XIDs that MIG
// instances report most often are ignored by default. Shares (time-sliced
// replicas) are the caller's: they map to their GPU's UUID.
//
// The package is pure: it must not talk to NVML, the kubelet (no gRPC) or the
// API server (no Kubernetes client), read flags or environment variables, or
// start goroutines. Time comes from an injected k8s.io/utils/clock. The caller
// feeds events in, calls Tick on a timer, and forwards the Changes it gets back.
package health
