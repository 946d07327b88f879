package main

import (
	"bytes"
	"strings"
	"testing"

	kversion "k8s.io/component-base/version"

	"github.com/tessera-gpu/tessera/pkg/version"
)

func TestVersionNamesTesseraAndKubernetes(t *testing.T) {
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("--version: %v", err)
	}
	want := "Tessera gpu-scheduler " + version.Version + " (Kubernetes " + kversion.Get().GitVersion + ")"
	if got := strings.TrimSpace(out.String()); got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}
