package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
)

// want builds the expected Config: defaults, then changes.
func want(change func(c *Config)) *Config {
	c := Default()
	if change != nil {
		change(c)
	}
	return c
}

func gpuShares(replicas int) ReplicatedResource {
	return ReplicatedResource{Name: ResourceGPU, Devices: ReplicatedDevices{All: true}, Replicas: replicas}
}

func migShares(profile string, replicas int) ReplicatedResource {
	return ReplicatedResource{Name: MIGResourceName(profile), Devices: ReplicatedDevices{All: true}, Replicas: replicas}
}

// equalConfig compares the exported fields.
func equalConfig(t *testing.T, got, want *Config) {
	t.Helper()
	g, w := *got, *want
	g.set, w.set = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("config mismatch\n got: %+v\nwant: %+v", g, w)
	}
}

func TestParseNVIDIAExamples(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{"nvidia-readme-flags.yaml", want(func(c *Config) { c.Ignored = []string{"flags.nvidiaDriverRoot"} })},
		{"nvidia-time-slicing-4.yaml", want(func(c *Config) {
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{gpuShares(4)}
		})},
		{"nvidia-time-slicing-rename-by-default.yaml", want(func(c *Config) {
			c.Sharing.TimeSlicing.RenameByDefault = true
			r := gpuShares(10)
			r.Rename = "nvidia.com/gpu.shared"
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{r}
		})},
		{"nvidia-mixed-a100-40gb.yaml", want(func(c *Config) {
			c.Flags.MIGStrategy = MIGStrategyMixed
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{
				gpuShares(8), migShares("1g.5gb", 2), migShares("2g.10gb", 2), migShares("3g.20gb", 3), migShares("7g.40gb", 7),
			}
		})},
		{"nvidia-mixed-a100-80gb.yaml", want(func(c *Config) {
			c.Flags.MIGStrategy = MIGStrategyMixed
			c.Sharing.TimeSlicing.FailRequestsGreaterThanOne = true
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{
				migShares("1g.10gb", 2), migShares("2g.20gb", 2), migShares("3g.40gb", 3), migShares("7g.80gb", 7),
			}
		})},
		{"nvidia-helm-full.yaml", want(func(c *Config) {
			c.Flags.MIGStrategy = MIGStrategySingle
			c.Flags.FailOnInitError = false
			c.Flags.Plugin = PluginFlags{
				PassDeviceSpecs:      true,
				DeviceListStrategies: []DeviceListStrategy{DeviceListStrategyEnvVar, DeviceListStrategyCDIAnnotations},
				DeviceIDStrategy:     DeviceIDStrategyIndex,
				CDIAnnotationPrefix:  "cdi.k8s.io/",
			}
			c.Ignored = []string{
				"flags.nvidiaDriverRoot", "flags.gdsEnabled", "flags.mofedEnabled",
				"flags.plugin.nvidiaCTKPath", "flags.plugin.containerDriverRoot", "flags.gfd", "imex",
			}
		})},
		{"tessera-per-gpu.yaml", want(func(c *Config) {
			c.Flags.MIGStrategy = MIGStrategyMixed
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{
				{Name: ResourceGPU, Rename: "nvidia.com/gpu.shared", Devices: ReplicatedDevices{List: []string{"0", "1", "2", "3"}}, Replicas: 4},
				{Name: "nvidia.com/mig-1g.10gb", Devices: ReplicatedDevices{List: []string{"0"}}, Replicas: 2},
			}
		})},
		{"tessera-replicas-per-gpu.yaml", want(func(c *Config) {
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{
				{Name: ResourceGPU, Rename: "nvidia.com/gpu.shared", Devices: ReplicatedDevices{List: []string{"0", "1"}}, Replicas: 2},
				{Name: ResourceGPU, Rename: "nvidia.com/gpu.shared", Devices: ReplicatedDevices{List: []string{"2", "3"}}, Replicas: 4},
			}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			equalConfig(t, got, tt.want)
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Config
	}{
		{name: "empty file is the default", in: "", want: Default()},
		{name: "comments only", in: "# nothing here\n", want: Default()},
		{name: "no version means v1", in: "flags:\n  migStrategy: single\n", want: want(func(c *Config) { c.Flags.MIGStrategy = MIGStrategySingle })},
		{name: "json", in: `{"version":"v1","sharing":{"timeSlicing":{"resources":[{"name":"nvidia.com/gpu","replicas":2}]}}}`,
			want: want(func(c *Config) { c.Sharing.TimeSlicing.Resources = []ReplicatedResource{gpuShares(2)} })},
		{name: "bare names are put in nvidia.com", in: "sharing:\n  timeSlicing:\n    resources:\n    - name: gpu\n      rename: gpu.shared\n      replicas: 2\n",
			want: want(func(c *Config) {
				r := gpuShares(2)
				r.Rename = "nvidia.com/gpu.shared"
				c.Sharing.TimeSlicing.Resources = []ReplicatedResource{r}
			})},
		{name: "media extension profile with + is canonicalised", in: "sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/mig-1g.10gb+me\n      replicas: 2\n",
			want: want(func(c *Config) {
				c.Sharing.TimeSlicing.Resources = []ReplicatedResource{migShares("1g.10gb+me", 2)}
			})},
		{name: "rename by default on a mig resource, explicit rename kept", in: `
sharing:
  timeSlicing:
    renameByDefault: true
    resources:
    - name: nvidia.com/mig-1g.10gb
      replicas: 2
    - name: nvidia.com/gpu
      rename: nvidia.com/gpu-tiny
      replicas: 3
`, want: want(func(c *Config) {
			c.Sharing.TimeSlicing.RenameByDefault = true
			a, b := migShares("1g.10gb", 2), gpuShares(3)
			a.Rename, b.Rename = "nvidia.com/mig-1g.10gb.shared", "nvidia.com/gpu-tiny"
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{a, b}
		})},
		{name: "devices forms", in: `
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      devices: 2
      replicas: 2
    - name: nvidia.com/mig-1g.10gb
      devices: [1, "2", "0:3", "GPU-8d4f7a2c-1f4e-4b1c-9a3e-2f1d5c6b7a80", "MIG-5c8e2f1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b", "MIG-GPU-8d4f7a2c-1f4e-4b1c-9a3e-2f1d5c6b7a80/3/0"]
      replicas: 2
    - name: nvidia.com/mig-2g.20gb
      devices: all
      replicas: 2
`, want: want(func(c *Config) {
			c.Sharing.TimeSlicing.Resources = []ReplicatedResource{
				{Name: ResourceGPU, Devices: ReplicatedDevices{Count: 2}, Replicas: 2},
				{Name: "nvidia.com/mig-1g.10gb", Devices: ReplicatedDevices{List: []string{
					"1", "2", "0:3", "GPU-8d4f7a2c-1f4e-4b1c-9a3e-2f1d5c6b7a80",
					"MIG-5c8e2f1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b", "MIG-GPU-8d4f7a2c-1f4e-4b1c-9a3e-2f1d5c6b7a80/3/0",
				}}, Replicas: 2},
				migShares("2g.20gb", 2),
			}
		})},
		{name: "yaml 1.1 booleans as NVIDIA's parser reads them", in: "flags:\n  failOnInitError: no\n  plugin:\n    passDeviceSpecs: yes\n",
			want: want(func(c *Config) {
				c.Flags.FailOnInitError = false
				c.Flags.Plugin.PassDeviceSpecs = true
			})},
		{name: "anchors and aliases", in: "sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: &n 4\n    - name: nvidia.com/mig-1g.10gb\n      replicas: *n\n",
			want: want(func(c *Config) {
				c.Sharing.TimeSlicing.Resources = []ReplicatedResource{gpuShares(4), migShares("1g.10gb", 4)}
			})},
		{name: "cdi-cri device list", in: "flags:\n  plugin:\n    deviceListStrategy: cdi-cri\n",
			want: want(func(c *Config) {
				c.Flags.Plugin.DeviceListStrategies = []DeviceListStrategy{DeviceListStrategyCDICRI}
			})},
		{name: "empty timeSlicing", in: "sharing:\n  timeSlicing: {}\n", want: Default()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			equalConfig(t, got, tt.want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	ts := func(resources string) string {
		return "version: v1\nsharing:\n  timeSlicing:\n    resources:\n" + resources
	}
	tests := []struct {
		name string
		in   string
		// wantErr are substrings the error must hold, each naming a field.
		wantErr []string
	}{
		{"unknown version", "version: v2\n", []string{`version: Unsupported value: "v2": supported values: "v1"`}},
		{"version not a string", "version: 1\n", []string{`version: Invalid value: "1": must be a string`}},
		{"unknown mig strategy", "flags:\n  migStrategy: dual\n",
			[]string{`flags.migStrategy: Unsupported value: "dual": supported values: "none", "single", "mixed"`}},
		{"unknown device list strategy", "flags:\n  plugin:\n    deviceListStrategy: [envvar, files]\n",
			[]string{`flags.plugin.deviceListStrategy[1]: Unsupported value: "files": supported values: "envvar", "volume-mounts", "cdi-annotations", "cdi-cri"`}},
		{"duplicate device list strategy", "flags:\n  plugin:\n    deviceListStrategy: [envvar, envvar]\n",
			[]string{`flags.plugin.deviceListStrategy[1]: Duplicate value: "envvar"`}},
		{"empty device list strategy", "flags:\n  plugin:\n    deviceListStrategy: []\n",
			[]string{`flags.plugin.deviceListStrategy: Required value`}},
		{"unknown device id strategy", "flags:\n  plugin:\n    deviceIDStrategy: serial\n",
			[]string{`flags.plugin.deviceIDStrategy: Unsupported value: "serial": supported values: "uuid", "index"`}},
		{"bad cdi annotation prefix", "flags:\n  plugin:\n    cdiAnnotationPrefix: Not_A_Domain\n",
			[]string{`flags.plugin.cdiAnnotationPrefix: Invalid value: "Not_A_Domain"`}},
		{"failOnInitError not a bool", "flags:\n  failOnInitError: maybe\n", []string{`flags.failOnInitError: Invalid value: "maybe": must be true or false`}},
		{"unknown top-level field", "versio: v1\n", []string{`versio: Forbidden: unknown field (known fields of <top level>: version, flags, sharing`}},
		{"unknown flag", "flags:\n  migStrategie: mixed\n", []string{`flags.migStrategie: Forbidden: unknown field`, "migStrategy"}},
		{"unknown resource field", ts("    - name: nvidia.com/gpu\n      replica: 4\n"),
			[]string{`sharing.timeSlicing.resources[0].replica: Forbidden: unknown field`, `sharing.timeSlicing.resources[0].replicas: Required value`}},
		{"mps refused", "sharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n",
			[]string{`sharing.mps: Forbidden: MPS sharing is not supported by Tessera`}},
		{"replicas zero", ts("    - name: nvidia.com/gpu\n      replicas: 4\n    - name: nvidia.com/mig-1g.10gb\n      replicas: 0\n"),
			[]string{`sharing.timeSlicing.resources[1].replicas: Invalid value: 0: must be >= 1`}},
		{"replicas negative", ts("    - name: nvidia.com/gpu\n      replicas: -2\n"),
			[]string{`sharing.timeSlicing.resources[0].replicas: Invalid value: -2: must be >= 1`}},
		{"replicas too many", ts("    - name: nvidia.com/gpu\n      replicas: 100000\n"),
			[]string{`sharing.timeSlicing.resources[0].replicas: Invalid value: 100000: must be <= 1024`}},
		{"replicas a string", ts("    - name: nvidia.com/gpu\n      replicas: \"4\"\n"),
			[]string{`sharing.timeSlicing.resources[0].replicas: Invalid value: "4": must be an integer`}},
		{"replicas a float", ts("    - name: nvidia.com/gpu\n      replicas: 2.5\n"),
			[]string{`sharing.timeSlicing.resources[0].replicas: Invalid value: "2.5": must be an integer`}},
		{"name missing", ts("    - replicas: 2\n"), []string{`sharing.timeSlicing.resources[0].name: Required value`}},
		{"name empty", ts("    - name: \"\"\n      replicas: 2\n"), []string{`sharing.timeSlicing.resources[0].name: Required value`}},
		{"name not a gpu resource", ts("    - name: nvidia.com/tpu\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].name: Invalid value: "nvidia.com/tpu": must be nvidia.com/gpu or nvidia.com/mig-<profile>`}},
		{"name in another domain", ts("    - name: amd.com/gpu\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].name: Invalid value: "amd.com/gpu"`}},
		{"mig name without a profile", ts("    - name: nvidia.com/mig-big\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].name: Invalid value: "nvidia.com/mig-big"`}},
		{"duplicate names", ts("    - name: nvidia.com/gpu\n      replicas: 2\n    - name: gpu\n      replicas: 4\n"),
			[]string{`sharing.timeSlicing.resources[1].name: Invalid value: "nvidia.com/gpu": duplicate: resources[0] has this name and one of the two shares all devices`}},
		{"duplicate names after canonicalising", ts("    - name: nvidia.com/mig-1g.10gb.me\n      replicas: 2\n    - name: nvidia.com/mig-1g.10gb+me\n      replicas: 4\n"),
			[]string{`sharing.timeSlicing.resources[1].name: Invalid value: "nvidia.com/mig-1g.10gb.me": duplicate`}},
		{"rename not a resource name", ts("    - name: nvidia.com/gpu\n      rename: nvidia.com/GPU shared!\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].rename: Invalid value: "nvidia.com/GPU shared!": must be a valid extended resource name`}},
		{"rename into kubernetes.io", ts("    - name: nvidia.com/gpu\n      rename: kubernetes.io/gpu\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].rename: Invalid value: "kubernetes.io/gpu": must not be in the kubernetes.io domain`}},
		{"rename takes another resource's name", ts("    - name: nvidia.com/gpu\n      replicas: 2\n    - name: nvidia.com/mig-1g.10gb\n      rename: nvidia.com/gpu\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[1].rename: Invalid value: "nvidia.com/gpu": is the name of resources[0]`}},
		{"two renames alike", ts("    - name: nvidia.com/gpu\n      rename: nvidia.com/shared\n      replicas: 2\n    - name: nvidia.com/mig-1g.10gb\n      rename: nvidia.com/shared\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[1].rename: Invalid value: "nvidia.com/shared": duplicate: resources[0] is renamed to this name too`}},
		{"devices a word", ts("    - name: nvidia.com/gpu\n      devices: some\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].devices: Invalid value: "some": must be "all", a count of devices >= 1`}},
		{"devices count zero", ts("    - name: nvidia.com/gpu\n      devices: 0\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].devices: Invalid value: "0"`}},
		{"devices empty list", ts("    - name: nvidia.com/gpu\n      devices: []\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].devices: Invalid value: "[]": must not be empty`}},
		{"devices bad entries", ts("    - name: nvidia.com/gpu\n      devices: [0, -1, \"GPU-123\", \"gpu0\", {a: 1}]\n      replicas: 2\n"),
			[]string{
				`sharing.timeSlicing.resources[0].devices[1]: Invalid value: "-1"`,
				`sharing.timeSlicing.resources[0].devices[2]: Invalid value: "GPU-123"`,
				`sharing.timeSlicing.resources[0].devices[3]: Invalid value: "gpu0"`,
				`sharing.timeSlicing.resources[0].devices[4]: Invalid value: "<mapping>"`,
			}},
		{"devices duplicate entry", ts("    - name: nvidia.com/gpu\n      devices: [0, \"0\"]\n      replicas: 2\n"),
			[]string{`sharing.timeSlicing.resources[0].devices[1]: Duplicate value: "0"`}},
		{"resources not a list", "sharing:\n  timeSlicing:\n    resources: nvidia.com/gpu\n",
			[]string{`sharing.timeSlicing.resources: Invalid value: "nvidia.com/gpu": must be a list`}},
		{"null resource entry", ts("    -\n"), []string{`sharing.timeSlicing.resources[0]: Invalid value: "null": must be a mapping`}},
		{"flags not a mapping", "flags: [none]\n", []string{`flags: Invalid value: "<list>": must be a mapping`}},
		{"top level not a mapping", "just words\n", []string{`<top level>: Invalid value: "just words": must be a mapping`}},
		{"duplicate key", "flags:\n  migStrategy: none\n  migStrategy: mixed\n", []string{`flags.migStrategy: Duplicate value: "migStrategy"`}},
		{"several documents", "version: v1\n---\nversion: v1\n", []string{"more than one yaml document"}},
		{"yaml syntax", "flags:\n  migStrategy: [none\n", []string{"reading config yaml: yaml: line"}},
		{"several errors at once", "flags:\n  migStrategy: dual\n" + ts("    - name: nvidia.com/gpu\n      replicas: 0\n")[len("version: v1\n"):],
			[]string{`flags.migStrategy: Unsupported value: "dual"`, `sharing.timeSlicing.resources[0].replicas: Invalid value: 0`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want an error holding %q", got, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not hold %q", err, w)
				}
			}
		})
	}
}

func TestParseErrorIsAggregate(t *testing.T) {
	_, err := Parse([]byte("flags:\n  migStrategy: dual\n  plugin:\n    deviceIDStrategy: serial\n"))
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) {
		t.Fatalf("error %v is not an aggregate", err)
	}
	if len(agg.Errors()) != 2 {
		t.Errorf("aggregate holds %d errors, want 2: %v", len(agg.Errors()), agg)
	}
}

func TestIsSet(t *testing.T) {
	c, err := Parse([]byte("flags:\n  migStrategy: none\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsSet("flags.migStrategy") {
		t.Error("flags.migStrategy written in the file is not set")
	}
	if c.IsSet("flags.failOnInitError") {
		t.Error("flags.failOnInitError holds its default but is set")
	}
}

func TestResource(t *testing.T) {
	c, err := Parse([]byte("sharing:\n  timeSlicing:\n    resources:\n    - name: mig-1g.10gb+me\n      replicas: 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nvidia.com/mig-1g.10gb.me", "nvidia.com/mig-1g.10gb+me", "mig-1g.10gb.me"} {
		r, ok := c.Resource(name)
		if !ok || r.Replicas != 3 || r.AdvertisedName() != "nvidia.com/mig-1g.10gb.me" {
			t.Errorf("Resource(%q) = %+v, %v", name, r, ok)
		}
	}
	if _, ok := c.Resource(ResourceGPU); ok {
		t.Errorf("Resource(%q) found an entry the file does not have", ResourceGPU)
	}
}

func TestMIGResourceName(t *testing.T) {
	tests := []struct{ profile, want string }{
		{"1g.10gb", "nvidia.com/mig-1g.10gb"},
		{"1g.10gb+me", "nvidia.com/mig-1g.10gb.me"},
		{"1c.3g.40gb", "nvidia.com/mig-1c.3g.40gb"},
		{"1g.23gb+me.all", "nvidia.com/mig-1g.23gb.me.all"},
		{"1g.23gb-me", "nvidia.com/mig-1g.23gb-me"},
	}
	for _, tt := range tests {
		if got := MIGResourceName(tt.profile); got != tt.want {
			t.Errorf("MIGResourceName(%q) = %q, want %q", tt.profile, got, tt.want)
		}
		if !IsMIGResource(tt.want) {
			t.Errorf("IsMIGResource(%q) = false", tt.want)
		}
		if !migProfileRE.MatchString(strings.TrimPrefix(tt.want, MIGResourcePrefix)) {
			t.Errorf("resource %q is not accepted in a config file", tt.want)
		}
	}
}
