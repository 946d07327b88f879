package mig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/mig"
)

const (
	migPartedExample    = "testdata/mig-parted-example.yaml"
	gpuOperatorDefaults = "testdata/gpu-operator-default-mig-parted-config.yaml"
)

// operatorConfig writes the config.yaml of the GPU Operator's
// default-mig-parted-config ConfigMap, unchanged, to a file as the ConfigMap
// mount would, and returns its path.
func operatorConfig(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(gpuOperatorDefaults)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatalf("decoding %s: %v", gpuOperatorDefaults, err)
	}
	content, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("%s has no config.yaml", gpuOperatorDefaults)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadMIGPartedExample(t *testing.T) {
	f, err := mig.Load(migPartedExample)
	if err != nil {
		t.Fatal(err)
	}
	all := mig.Devices{All: true}
	entry := func(line int, devices mig.Devices, enabled bool, devs map[string]int) mig.Entry {
		return mig.Entry{Devices: devices, MIGEnabled: enabled, MIGDevices: devs, Line: line}
	}
	idx := func(i ...int) mig.Devices { return mig.Devices{Indices: i} }
	want := &mig.File{
		Version: "v1",
		Source:  migPartedExample,
		Configs: map[string][]mig.Entry{
			"all-disabled": {entry(4, all, false, nil)},
			"all-enabled":  {entry(8, all, true, map[string]int{})},
			"all-1g.5gb":   {entry(13, all, true, map[string]int{"1g.5gb": 7})},
			"all-2g.10gb":  {entry(19, all, true, map[string]int{"2g.10gb": 3})},
			"all-3g.20gb":  {entry(25, all, true, map[string]int{"3g.20gb": 2})},
			"all-balanced": {entry(31, all, true, map[string]int{"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1})},
			"custom-config": {
				entry(39, idx(0, 1, 2, 3), false, nil),
				entry(41, idx(4), true, map[string]int{"1g.5gb": 7}),
				entry(45, idx(5), true, map[string]int{"2g.10gb": 3}),
				entry(49, idx(6), true, map[string]int{"3g.20gb": 2}),
				entry(53, idx(7), true, map[string]int{"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}),
			},
		},
	}
	if d := cmp.Diff(want, f); d != "" {
		t.Errorf("Load(%s) (-want +got):\n%s", migPartedExample, d)
	}
}

func TestLoadGPUOperatorDefaultConfig(t *testing.T) {
	f, err := mig.Load(operatorConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.Configs); n != 68 {
		t.Errorf("got %d configs, want 68: %v", n, f.Names())
	}
	balanced := f.Configs["all-balanced"]
	if len(balanced) != 10 {
		t.Fatalf("all-balanced has %d entries, want 10", len(balanced))
	}
	tests := []struct {
		name  string
		entry mig.Entry
		want  mig.DeviceFilter
		devs  map[string]int
	}{
		{"GB200 (a list of one)", balanced[0], mig.DeviceFilter{0x294110DE}, map[string]int{"1g.23gb": 2, "2g.47gb": 1, "3g.93gb": 1}},
		{"A100 40GB (a list)", balanced[7], mig.DeviceFilter{0x20B010DE, 0x20B110DE, 0x20F110DE, 0x20F610DE}, map[string]int{"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}},
		{"A30 (a single string)", balanced[8], mig.DeviceFilter{0x20B710DE}, map[string]int{"1g.6gb": 2, "2g.12gb": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, tt.entry.DeviceFilter); d != "" {
				t.Errorf("device-filter (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.devs, tt.entry.MIGDevices); d != "" {
				t.Errorf("mig-devices (-want +got):\n%s", d)
			}
			if !tt.entry.Devices.All || !tt.entry.MIGEnabled {
				t.Errorf("entry %+v: want devices all and mig enabled", tt.entry)
			}
		})
	}
	for _, name := range []string{"all-1g.24gb.me.all", "all-1g.24gb-me", "all-4g.96gb.gfx"} {
		if _, ok := f.Configs[name]; !ok {
			t.Errorf("config %s missing", name)
		}
	}
}

func TestDeviceFilterMatches(t *testing.T) {
	tests := []struct {
		name   string
		filter mig.DeviceFilter
		id     uint32
		want   bool
	}{
		{"empty selects all", nil, 0x233010DE, true},
		{"listed", mig.DeviceFilter{0x20B010DE, 0x233010DE}, 0x233010DE, true},
		{"not listed", mig.DeviceFilter{0x20B010DE}, 0x233010DE, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Matches(tt.id); got != tt.want {
				t.Errorf("%v.Matches(%#x) = %v, want %v", tt.filter, tt.id, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string // substrings of the error, in any order
	}{
		{"empty", "", []string{"bad.yaml: the file is empty"}},
		{"not yaml", "version: [v1", []string{"bad.yaml", "did not find expected ',' or ']' (while parsing a flow sequence that began on line 1, column 10)"}},
		{"two documents", "version: v1\nmig-configs: {a: [{devices: all}]}\n---\nversion: v1\n", []string{"line 3: the file holds more than one yaml document"}},
		{"wrong version", "version: v2\nmig-configs: {a: [{devices: all}]}\n", []string{`line 1: version must be "v1", not "v2"`}},
		{"missing version and configs", "{}\n", []string{"version is missing", "mig-configs is missing"}},
		{"unknown top-level field", "version: v1\nmig-config: {}\n", []string{`line 2: the file: unknown field "mig-config" (want version, mig-configs)`}},
		{"no configs", "version: v1\nmig-configs: {}\n", []string{"mig-configs holds no config"}},
		{"config not a list", "version: v1\nmig-configs:\n  a: {devices: all}\n", []string{`line 3: config "a" must be a list of entries, not a mapping`}},
		{
			"unknown entry field with its line",
			"version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-device: {1g.5gb: 7}\n",
			[]string{`line 6: config "a" entry 1: unknown field "mig-device" (want device-filter, devices, mig-enabled, mig-devices)`},
		},
		{"repeated field", "version: v1\nmig-configs:\n  a:\n    - devices: all\n      devices: [0]\n", []string{`line 5: config "a" entry 1: "devices" is repeated (first on line 4)`}},
		{"missing devices", "version: v1\nmig-configs:\n  a:\n    - mig-enabled: false\n", []string{`line 4: config "a" entry 1: devices is missing`}},
		{"devices not all", "version: v1\nmig-configs:\n  a:\n    - devices: some\n", []string{`devices must be all or a list of gpu indices, not "some"`}},
		{"negative index", "version: v1\nmig-configs:\n  a:\n    - devices: [0, -1, x, 0]\n", []string{`"-1" is not a gpu index`, `"x" is not a gpu index`, "gpu index 0 is listed twice"}},
		{"bad device filter", "version: v1\nmig-configs:\n  a:\n    - device-filter: [\"0x233010DE\", \"H100\"]\n      devices: all\n", []string{`line 4: config "a" entry 1: device-filter "H100": want a PCI device ID`}},
		{"mig-enabled not a bool", "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: yes\n", []string{`mig-enabled must be true or false, not "yes"`}},
		{
			"mig devices with mig disabled",
			"version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n      mig-devices: {1g.5gb: 1}\n",
			[]string{`line 4: config "a" entry 1: mig-devices must be empty when mig-enabled is false`},
		},
		{
			"bad profile and count",
			"version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {1g5gb: 1, 2g.10gb: -1, 3g.20gb: two}\n",
			[]string{`"1g5gb" is not a mig profile name`, "count of 2g.10gb must be an integer >= 0", "count of 3g.20gb must be an integer >= 0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := mig.Parse([]byte(tt.data), "bad.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if !strings.Contains(err.Error(), "bad.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// TestParseSyntaxErrorLines checks that a YAML syntax error names the line
// and column of the problem, and where the construct it broke began: the
// user edits the line the message names.
func TestParseSyntaxErrorLines(t *testing.T) {
	const head = "version: v1\nmig-configs:\n  a:\n    - devices: all\n"
	tests := []struct {
		name string
		data string
		want string // the whole error after "invalid mig config file bad.yaml: "
	}{
		{
			name: "key indented one space too little",
			data: head + "      mig-enabled: true\n     mig-devices: {}\n",
			want: "yaml syntax: line 6, column 6: did not find expected '-' indicator (while parsing a block collection that began on line 4, column 5)",
		},
		{
			name: "key indented one space too much",
			data: head + "      mig-enabled: true\n      mig-devices:\n        1g.5gb: 7\n       2g.10gb: 1\n",
			want: "yaml syntax: line 8, column 8: did not find expected key (while parsing a block mapping that began on line 4, column 7)",
		},
		{
			name: "entry outdented out of its config",
			data: head + "  - devices: all\n",
			want: "yaml syntax: line 5, column 3: did not find expected key (while parsing a block mapping that began on line 3, column 3)",
		},
		{
			name: "tab indentation",
			data: head + "\tmig-enabled: true\n",
			want: "yaml syntax: line 5, column 1: found a tab character that violates indentation (while scanning a plain scalar that began on line 4, column 16)",
		},
		{
			name: "unclosed quote runs to the end of the file",
			data: head + "      mig-enabled: \"true\n  b: []\n",
			want: "yaml syntax: line 7, column 1: found unexpected end of stream (while scanning a quoted scalar that began on line 5, column 20)",
		},
		{
			name: "unclosed flow mapping is found on the next key",
			data: head + "      mig-enabled: true\n      mig-devices: {1g.5gb: 7\n  b:\n    - devices: all\n",
			want: "yaml syntax: line 7, column 4: mapping values are not allowed in this context",
		},
		{
			name: "error in the second document",
			data: "version: v1\nmig-configs: {a: [{devices: all}]}\n---\nversion: [v1\n",
			want: "yaml syntax: line 5, column 1: did not find expected ',' or ']' (while parsing a flow sequence that began on line 4, column 10)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := mig.Parse([]byte(tt.data), "bad.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", f)
			}
			if got, want := err.Error(), "invalid mig config file bad.yaml: "+tt.want; got != want {
				t.Errorf("Parse error\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

func TestParseJSONAndAliases(t *testing.T) {
	data := `{"version": "v1", "mig-configs": {"a": [{"devices": [0, 1], "mig-enabled": true, "mig-devices": {"3g.40gb": 2}}]}}`
	f, err := mig.Parse([]byte(data), "a.json")
	if err != nil {
		t.Fatal(err)
	}
	want := []mig.Entry{{Devices: mig.Devices{Indices: []int{0, 1}}, MIGEnabled: true, MIGDevices: map[string]int{"3g.40gb": 2}, Line: 1}}
	if d := cmp.Diff(want, f.Configs["a"]); d != "" {
		t.Errorf("json (-want +got):\n%s", d)
	}
	aliased := "version: v1\nmig-configs:\n  a:\n    - &e\n      devices: all\n      mig-enabled: true\n      mig-devices: {3g.40gb: 2}\n  b:\n    - *e\n"
	f, err = mig.Parse([]byte(aliased), "alias.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(f.Configs["a"], f.Configs["b"]); d != "" {
		t.Errorf("aliased entry differs (-a +b):\n%s", d)
	}
}
