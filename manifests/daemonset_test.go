package manifests

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/agent"
)

// TestAgentDaemonSetLifecycle checks what the kubelet does with the agent's
// pod: it probes /healthz (liveness) and /readyz (readiness) on the port the
// agent serves them on (--metrics-address), and it waits longer than the
// agent's own --shutdown-timeout before killing it after SIGTERM.
func TestAgentDaemonSetLifecycle(t *testing.T) {
	data, err := os.ReadFile("base/gpu-agent-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "gpu-agent" {
			c = &spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatal("no gpu-agent container")
	}
	flag := func(name string) (string, bool) {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v, true
			}
		}
		return "", false
	}

	shutdown := agent.DefaultShutdownTimeout
	if v, ok := flag("shutdown-timeout"); ok {
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--shutdown-timeout=%s: %v", v, err)
		}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Errorf("terminationGracePeriodSeconds unset (the default 30s must be stated next to --shutdown-timeout)")
	} else if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %s is not above --shutdown-timeout %s: the kubelet kills the agent mid-shutdown", grace, shutdown)
	}

	addr, ok := flag("metrics-address")
	if !ok || addr == "" {
		t.Fatal("--metrics-address unset: /healthz and /readyz are served there")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("--metrics-address=%s: %v", addr, err)
	}
	portOf := func(p intstr.IntOrString) string {
		if p.Type == intstr.Int {
			return strconv.Itoa(p.IntValue())
		}
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return "unknown port name " + p.StrVal
	}
	for _, tt := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if tt.probe == nil || tt.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe of %s", tt.name, tt.path)
			continue
		}
		if got := tt.probe.HTTPGet.Path; got != tt.path {
			t.Errorf("%s path = %s, want %s", tt.name, got, tt.path)
		}
		if got := portOf(tt.probe.HTTPGet.Port); got != port {
			t.Errorf("%s port = %s, want %s (--metrics-address=%s)", tt.name, got, port, addr)
		}
	}
}
