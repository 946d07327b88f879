package agent

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
)

// check is one readiness condition: fn returns nil when it holds, else
// why not. A check that is not required is reported but does not make the
// agent unready.
type check struct {
	name     string
	required bool
	fn       func() error
}

// checks are the readiness conditions. In a cluster (a Kubernetes API
// client is configured) the agent is ready once every device-plugin
// resource is registered with the kubelet and the first telemetry snapshot
// is taken. Standalone there may be no kubelet at all (a workstation that
// only exports metrics): ready means the first snapshot is taken, and the
// kubelet check reports registration without requiring it.
func (a *Agent) checks() []check {
	return []check{
		{name: "kubelet-registration", required: a.cfg.Client != nil, fn: func() error {
			registered, failures := a.mgr.RegistrationStatus()
			if registered {
				return nil
			}
			return fmt.Errorf("not registered with the kubelet yet (%d failed attempts)", failures)
		}},
		{name: "telemetry", required: true, fn: func() error {
			if !a.exporter.Collected() {
				return fmt.Errorf("no telemetry snapshot taken yet")
			}
			return nil
		}},
	}
}

// Ready returns nil when the agent is ready (see /readyz), else why not.
func (a *Agent) Ready() error {
	var failed []string
	for _, c := range a.checks() {
		if err := c.fn(); err != nil && c.required {
			failed = append(failed, c.name+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("not ready: %s", strings.Join(failed, "; "))
	}
	return nil
}

// Handler serves /metrics (the telemetry snapshot and the agent's own
// metrics), /healthz (200 while the process serves: a liveness probe) and
// /readyz (200 when Ready, else 503; both list their checks, as the
// Kubernetes components' probes do, with ?verbose or on failure).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.exporter.Handler(a.reg))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", a.serveReadyz)
	return mux
}

func (a *Agent) serveReadyz(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	ready := true
	for _, c := range a.checks() {
		err := c.fn()
		switch {
		case err == nil:
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		case !c.required:
			fmt.Fprintf(&b, "[+]%s not required standalone: %v\n", c.name, err)
		default:
			ready = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, err)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		b.WriteString("readyz check failed\n")
		_, _ = w.Write([]byte(b.String()))
		return
	}
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		b.WriteString("readyz check passed\n")
		_, _ = w.Write([]byte(b.String()))
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// pprofMux serves net/http/pprof's handlers on their own mux, so that they
// are reachable only on DebugAddress, never next to /metrics.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
