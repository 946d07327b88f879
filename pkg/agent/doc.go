// Package agent is Tessera's GPU node agent assembled: it owns the
// composition root of gpu-agent and the policy of its lifecycle, and nothing
// below it.
//
// New wires one GPU backend (opened by the caller) into the device plugin
// (pkg/deviceplugin) and its health tracker, the layout reconciler
// (pkg/mig/reconcile), the pod resources view (pkg/podresources) and
// telemetry (pkg/telemetry), with one Event recorder for the process shared
// by every part that records. It decides what happens before anything is
// advertised: a standalone layout is applied, an interrupted layout change is
// recovered, and a bad device-plugin config refuses the start. An
// unreachable API server does not stop it: the default config serves until
// the node label can be read, and the reconciler catches up. Run runs the
// parts until its context ends, then shuts them down within a bound.
// Handler serves /metrics, /healthz and /readyz.
//
// It must not read flags or environment variables (cmd/gpu-agent turns them
// into a Config), open the GPU backend or the Kubernetes client itself, or
// hold what belongs to the packages it wires (advertising, health, layouts,
// telemetry).
package agent
