package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newConfigMapDir lays files out as the kubelet mounts a ConfigMap: the data in
// a timestamped directory, ..data linking to it, and one link per key.
func newConfigMapDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_01_02_03_04_05.000000001")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(data, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	sharedFour = "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n"
	mixed      = "version: v1\nflags:\n  migStrategy: mixed\n"
)

func TestSelect(t *testing.T) {
	several := map[string]string{"default": "version: v1\n", "a100": mixed, "t4.yaml": sharedFour}
	tests := []struct {
		name               string
		files              map[string]string // nil: no directory
		label, defaultName string
		wantName, wantFile string
		wantErr            []string
	}{
		{name: "label names a key", files: several, label: "a100", defaultName: "default", wantName: "a100", wantFile: "a100"},
		{name: "label names a key with .yaml", files: several, label: "t4", defaultName: "default", wantName: "t4", wantFile: "t4.yaml"},
		{name: "label names the full key", files: several, label: "t4.yaml", wantName: "t4.yaml", wantFile: "t4.yaml"},
		{name: "no label: the default", files: several, defaultName: "default", wantName: "default", wantFile: "default"},
		{name: "no label, no default, one file", files: map[string]string{"only": mixed}, wantName: "only", wantFile: "only"},
		{name: "no label, no default, no file", files: map[string]string{}, wantName: "", wantFile: ""},
		{name: "no directory, nothing named", files: nil, wantName: "", wantFile: ""},
		{name: "unknown label lists the names", files: several, label: "h100", defaultName: "default",
			wantErr: []string{`node label nvidia.com/device-plugin.config names config "h100"`, "available: a100, default, t4.yaml"}},
		{name: "unknown default", files: several, defaultName: "missing", wantErr: []string{`default config names config "missing"`}},
		{name: "no label, no default, several files", files: several,
			wantErr: []string{"no config selected", "a100, default, t4.yaml"}},
		{name: "label with a path", files: several, label: "../etc", wantErr: []string{`"../etc", which is not a file name`}},
		{name: "hidden entries are not configs", files: several, label: "..data", wantErr: []string{"not a file name"}},
		{name: "label but no directory", files: nil, label: "a100", wantErr: []string{"no config directory is given"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := ""
			if tt.files != nil {
				dir = newConfigMapDir(t, tt.files)
			}
			name, path, err := Select(dir, tt.label, tt.defaultName)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Select = %q, %q; want an error", name, path)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not hold %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			wantPath := ""
			if tt.wantFile != "" {
				wantPath = filepath.Join(dir, tt.wantFile)
			}
			if name != tt.wantName || path != wantPath {
				t.Errorf("Select = %q, %q; want %q, %q", name, path, tt.wantName, wantPath)
			}
		})
	}
}

func TestSelectMissingDirectory(t *testing.T) {
	_, _, err := Select(filepath.Join(t.TempDir(), "absent"), "a100", "")
	if err == nil || !strings.Contains(err.Error(), "reading config directory") {
		t.Errorf("Select on a missing directory: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := newConfigMapDir(t, map[string]string{"a100": mixed, "t4": sharedFour, "broken": "flags:\n  migStrategy: dual\n"})
	tests := []struct {
		name, label string
		wantName    string
		wantMIG     MIGStrategy
		wantShares  int
		wantErr     []string
	}{
		{name: "by label", label: "a100", wantName: "a100", wantMIG: MIGStrategyMixed},
		{name: "default", label: "", wantName: "t4", wantMIG: MIGStrategyNone, wantShares: 1},
		{name: "invalid file names config, file and field", label: "broken",
			wantErr: []string{`device plugin config "broken"`, filepath.Join(dir, "broken"), `flags.migStrategy: Unsupported value: "dual"`}},
		{name: "unknown", label: "v100", wantErr: []string{"selecting device plugin config", "available: a100, broken, t4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, name, err := Load(dir, tt.label, "t4")
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Load = %q; want an error", name)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not hold %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if name != tt.wantName || c.Flags.MIGStrategy != tt.wantMIG || len(c.Sharing.TimeSlicing.Resources) != tt.wantShares {
				t.Errorf("Load = %q with %+v; want %q, strategy %s, %d shared resources", name, c, tt.wantName, tt.wantMIG, tt.wantShares)
			}
		})
	}
}

func TestLoadNothingSelected(t *testing.T) {
	c, name, err := Load("", "", "")
	if err != nil || name != "" {
		t.Fatalf("Load with no directory = %q, %v", name, err)
	}
	equalConfig(t, c, Default())
}
