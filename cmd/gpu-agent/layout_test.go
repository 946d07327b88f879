package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files of cmd/gpu-agent tests")

const migPartedExample = "../../pkg/mig/testdata/mig-parted-example.yaml"

// operatorConfig writes the config.yaml of NVIDIA's GPU Operator
// default-mig-parted-config ConfigMap, unchanged, into dir.
func operatorConfig(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile("../../pkg/mig/testdata/gpu-operator-default-mig-parted-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLayoutCheck(t *testing.T) {
	dir := t.TempDir()
	operator := operatorConfig(t, dir)
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enable: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	impossible := filepath.Join(dir, "impossible.yaml")
	if err := os.WriteFile(impossible, []byte(`version: v1
mig-configs:
  eight-1g:
    - devices: [0]
      mig-enabled: true
      mig-devices: {1g.10gb: 8}
  7g-and-more:
    - devices: all
      mig-enabled: true
      mig-devices: {7g.80gb: 1, 1g.10gb: 1}
  index-8:
    - devices: [8]
      mig-enabled: false
  ok:
    - devices: [0, 1]
      mig-enabled: true
      mig-devices: {3g.40gb: 1, 2g.20gb: 1, 1g.10gb: 2}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{"mig-parted example on dgx-a100", []string{"--config", migPartedExample, "--backend", "sim:dgx-a100"}, false},
		{"mig-parted example on dgx-h100", []string{"--config", migPartedExample, "--backend", "sim:dgx-h100"}, true},
		{"gpu operator defaults on dgx-h100", []string{"--config", operator, "--backend", "sim:dgx-h100", "--name", "all-balanced", "--name", "all-1g.10gb", "--name", "all-7g.80gb"}, false},
		{"gpu operator defaults on dgx-a100", []string{"--config", operator, "--backend", "sim:dgx-a100", "--name", "all-balanced", "--name", "all-1g.10gb", "--name", "all-1g.10gb.me"}, true},
		{"impossible layouts on dgx-h100", []string{"--config", impossible, "--backend", "sim:dgx-h100"}, true},
		{"unknown name", []string{"--config", migPartedExample, "--backend", "sim:dgx-a100", "--name", "all-1g.10gb"}, true},
		{"invalid file", []string{"--config", invalid, "--backend", "sim:dgx-a100"}, true},
		{"no gpus", []string{"--config", migPartedExample, "--backend", "none", "--name", "custom-config"}, true},
		{"missing config flag", []string{"--backend", "sim:dgx-a100"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			var out bytes.Buffer
			cmd := newRootCommand()
			cmd.SetArgs(append([]string{"layout", "check"}, tt.args...))
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			err := cmd.ExecuteContext(ctx)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v", err, tt.wantErr)
			}
			got := out.String()
			if err != nil {
				got += "error: " + err.Error() + "\n"
			}
			got = strings.ReplaceAll(got, dir, "$TMP")
			golden := filepath.Join("testdata", "layout-check", strings.ReplaceAll(tt.name, " ", "-")+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/gpu-agent -run TestLayoutCheck -update)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("output differs from %s (-want +got):\n%s", golden, d)
			}
		})
	}
}
