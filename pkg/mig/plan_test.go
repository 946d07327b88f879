package mig_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

func TestPlanErrors(t *testing.T) {
	a100 := discover(t, newSim(t, "dgx-a100"))
	l40s := discover(t, newSim(t, "pcie-4xl40s"))
	tests := []struct {
		name    string
		config  string
		machine *gpu.Machine
		want    []string // problems, in order
		wantErr error
	}{
		{
			name:    "eight 1g slices on an A100",
			config:  "- devices: [0]\n  mig-enabled: true\n  mig-devices: {1g.5gb: 8}",
			machine: a100,
			want:    []string{"gpu 0: 1g.5gb: 8 instances requested, this NVIDIA-A100-SXM4-40GB holds at most 7"},
		},
		{
			name:    "a 7g with anything else",
			config:  "- devices: [1]\n  mig-enabled: true\n  mig-devices: {7g.40gb: 1, 1g.5gb: 1}",
			machine: a100,
			want:    []string{"gpu 1: 7g.40gb: 7g.40gb takes the whole gpu and cannot be combined with other instances (requested: 1×1g.5gb + 1×7g.40gb)"},
		},
		{
			name:    "a profile the GPU lacks",
			config:  "- devices: [2]\n  mig-enabled: true\n  mig-devices: {1g.10gb+me: 1}",
			machine: a100,
			want:    []string{"gpu 2: 1g.10gb+me: this NVIDIA-A100-SXM4-40GB does not offer the profile (it offers: 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)"},
		},
		{
			name:    "a device index that does not exist",
			config:  "- devices: [3, 8]\n  mig-enabled: false",
			machine: a100,
			want:    []string{"gpu 8: entry 1 (line 4) names device index 8, which does not exist (this machine has gpus 0 to 7)"},
		},
		{
			name:    "mig-enabled on a GPU without MIG",
			config:  "- devices: all\n  mig-enabled: true",
			machine: l40s,
			want: []string{
				"gpu 0: mig-enabled is true but this NVIDIA-L40S is not mig capable",
				"gpu 1: mig-enabled is true but this NVIDIA-L40S is not mig capable",
				"gpu 2: mig-enabled is true but this NVIDIA-L40S is not mig capable",
				"gpu 3: mig-enabled is true but this NVIDIA-L40S is not mig capable",
			},
		},
		{
			name:    "too many compute slices",
			config:  "- devices: [0]\n  mig-enabled: true\n  mig-devices: {4g.20gb: 1, 3g.20gb: 1, 1g.5gb: 1}",
			machine: a100,
			want:    []string{"gpu 0: 1×1g.5gb + 1×3g.20gb + 1×4g.20gb: the instances need 8 compute slices, this NVIDIA-A100-SXM4-40GB has 7"},
		},
		{
			name:    "too many memory slices",
			config:  "- devices: [0]\n  mig-enabled: true\n  mig-devices: {3g.20gb: 2, 1g.5gb: 1}",
			machine: a100,
			want:    []string{"gpu 0: 1×1g.5gb + 2×3g.20gb: the instances need 9 memory slices, this NVIDIA-A100-SXM4-40GB has 8"},
		},
		{
			name:    "compute-instance profile",
			config:  "- devices: [0]\n  mig-enabled: true\n  mig-devices: {1c.3g.20gb: 2}",
			machine: a100,
			want:    []string{"gpu 0: 1c.3g.20gb: compute-instance profiles are not supported; Tessera creates one compute instance spanning each gpu instance (use 3g.20gb)"},
		},
		{
			name:    "a GPU selected twice",
			config:  "- devices: [0, 1]\n  mig-enabled: false\n- device-filter: \"0x20B010DE\"\n  devices: all\n  mig-enabled: false",
			machine: a100,
			want: []string{
				"gpu 0: selected by both entry 1 (line 4) and entry 2 (line 6) of the config; an entry must select each gpu at most once",
				"gpu 1: selected by both entry 1 (line 4) and entry 2 (line 6) of the config; an entry must select each gpu at most once",
			},
		},
		{
			name: "every problem, not just the first",
			config: "- devices: [0]\n  mig-enabled: true\n  mig-devices: {1g.5gb: 8, 2g.20gb: 1}\n" +
				"- devices: [1]\n  mig-enabled: true\n  mig-devices: {7g.40gb: 1, 3g.20gb: 1}\n" +
				"- devices: [9]\n  mig-enabled: false",
			machine: a100,
			want: []string{
				"gpu 0: 1g.5gb: 8 instances requested, this NVIDIA-A100-SXM4-40GB holds at most 7",
				"gpu 0: 2g.20gb: this NVIDIA-A100-SXM4-40GB does not offer the profile (it offers: 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)",
				"gpu 1: 7g.40gb: 7g.40gb takes the whole gpu and cannot be combined with other instances (requested: 1×3g.20gb + 1×7g.40gb)",
				"gpu 9: entry 3 (line 10) names device index 9, which does not exist (this machine has gpus 0 to 7)",
			},
		},
		{
			name:    "a GPU that could not be read",
			config:  "- devices: all\n  mig-enabled: false",
			machine: &gpu.Machine{Backend: "test", Failed: []gpu.DeviceFailure{{Index: 0, Err: gpu.ErrGPULost}}},
			want:    []string{"gpu 0: selected by entry 1 (line 4) but could not be read: gpu is lost"},
		},
		{
			name:   "placements that cannot all be had",
			config: "- devices: all\n  mig-enabled: true\n  mig-devices: {2g.10gb: 1, 2g.20gb: 1}",
			machine: &gpu.Machine{Backend: "test", Devices: []gpu.Device{newMIGGPU(0,
				profile("2g.10gb", 2, 1, place(0, 2), place(2, 2)),
				profile("2g.20gb", 2, 1, place(1, 2)),
				profile("4g.40gb", 4, 1, place(0, 4)),
			)}},
			want: []string{"gpu 0: 1×2g.10gb + 1×2g.20gb: no set of legal placements on this TEST-GPU holds all the instances"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, "version: v1\nmig-configs:\n  c:\n"+indent(tt.config, "  "))
			p, err := mig.NewPlan(f, "c", tt.machine)
			if err == nil {
				t.Fatalf("NewPlan succeeded:\n%s", p)
			}
			var pe *mig.PlanError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *PlanError", err)
			}
			if !errors.Is(err, mig.ErrInvalidLayout) {
				t.Errorf("error %v does not wrap ErrInvalidLayout", err)
			}
			var got []string
			for _, p := range pe.Problems {
				got = append(got, p.String())
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("problems (-want +got):\n%s", d)
			}
			if !strings.HasPrefix(err.Error(), `mig config "c" in test.yaml cannot be applied; gpu`) {
				t.Errorf("error %q does not name the config and file", err)
			}
		})
	}
}

func TestPlanUnknownConfig(t *testing.T) {
	f := mustLoad(t, migPartedExample)
	_, err := mig.NewPlan(f, "all-1g.10gb", discover(t, newSim(t, "dgx-h100")))
	if !errors.Is(err, mig.ErrUnknownConfig) {
		t.Fatalf("error %v, want one wrapping ErrUnknownConfig", err)
	}
	want := `unknown mig config "all-1g.10gb" in testdata/mig-parted-example.yaml; the file has no config of that name ` +
		`(it has: all-1g.5gb, all-2g.10gb, all-3g.20gb, all-balanced, all-disabled, all-enabled, custom-config)`
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
}

// TestPlanPlacement checks that placements leave the most room: the largest
// profiles that still fit, then the longest free run.
func TestPlanPlacement(t *testing.T) {
	tests := []struct {
		name    string
		machine string
		devices string
		want    string
	}{
		{"3g leaves the 4g placement free", "dgx-a100", "{3g.20gb: 1}", "mig enabled: 3g.20gb@4"},
		{"2g leaves the 4g and a 3g free", "dgx-a100", "{2g.10gb: 1}", "mig enabled: 2g.10gb@4"},
		{"1g keeps away from the 4g and both 3g", "dgx-a100", "{1g.5gb: 1}", "mig enabled: 1g.5gb@6"},
		{"two 1g pack together, leaving a 1g.20gb placement", "dgx-h100", "{1g.10gb: 2}", "mig enabled: 1g.10gb@4 1g.10gb@5"},
		{"balanced H100", "dgx-h100", "{1g.10gb: 2, 2g.20gb: 1, 3g.40gb: 1}", "mig enabled: 2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"},
		{"4g and 3g", "dgx-h100", "{4g.40gb: 1, 3g.40gb: 1}", "mig enabled: 4g.40gb@0 3g.40gb@4"},
		{"1g.20gb uses two memory slices", "dgx-h100", "{1g.20gb: 4}", "mig enabled: 1g.20gb@0 1g.20gb@2 1g.20gb@4 1g.20gb@6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := discover(t, newSim(t, tt.machine))
			f := mustParse(t, "version: v1\nmig-configs:\n  c:\n    - devices: [0]\n      mig-enabled: true\n      mig-devices: "+tt.devices+"\n")
			p := mustPlan(t, f, "c", m)
			if got := p.GPUs[0].Desired.String(); got != tt.want {
				t.Errorf("desired layout %s, want %s", got, tt.want)
			}
			for _, g := range p.GPUs[1:] {
				if g.Selected || g.Changed() {
					t.Errorf("gpu %d: selected %v, changed %v; want neither", g.Index, g.Selected, g.Changed())
				}
			}
		})
	}
}

// TestPlanKeepsMatchingInstances checks that a GPU already holding the
// profile counts is left alone, and that instances at their planned place
// are kept rather than destroyed and created again.
func TestPlanKeepsMatchingInstances(t *testing.T) {
	b := newSim(t, "dgx-a100")
	ctx := ctx(t)
	if err := b.SetMIGMode(ctx, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMIGMode(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	// gpu 0: a 3g at 0 (not where the planner would put it alone) and a 1g.
	for _, c := range []struct {
		gpu     int
		profile string
		start   int
	}{{0, "3g.20gb", 0}, {0, "1g.5gb", 6}, {1, "3g.20gb", 4}} {
		if _, err := b.CreateMIGDevice(ctx, c.gpu, c.profile, c.start); err != nil {
			t.Fatal(err)
		}
	}
	m := discover(t, b)
	f := mustParse(t, `version: v1
mig-configs:
  c:
    - devices: [0]
      mig-enabled: true
      mig-devices: {3g.20gb: 1, 1g.5gb: 1}
    - devices: [1]
      mig-enabled: true
      mig-devices: {3g.20gb: 1, 2g.10gb: 1}
`)
	p := mustPlan(t, f, "c", m)
	if g := p.GPUs[0]; g.Changed() || !g.Desired.Matches(g.Current) {
		t.Errorf("gpu 0 already has the counts; plan changes it:\n%s", p)
	}
	g := p.GPUs[1]
	if len(g.Destroy) != 0 || len(g.Create) != 1 || g.Create[0].Profile != "2g.10gb" {
		t.Errorf("gpu 1: destroy %v, create %v; want the 3g kept and one 2g created", g.Destroy, g.Create)
	}
	wantUUIDs := []string{m.Devices[1].UUID}
	if d := cmp.Diff(wantUUIDs, p.AffectedUUIDs()); d != "" {
		t.Errorf("AffectedUUIDs (-want +got):\n%s", d)
	}
}

func TestPlanAffectedUUIDs(t *testing.T) {
	b := newSim(t, "dgx-h100")
	f := mustLoad(t, operatorConfig(t))
	applyConfig(t, b, f, "all-1g.10gb")
	m := discover(t, b)
	p := mustPlan(t, f, "all-balanced", m)
	var want []string
	for _, d := range m.Devices {
		want = append(want, d.UUID)
		for _, md := range d.MIGDevices {
			if !slicesContainsSlot(p.GPUs[d.Index].Desired, md) {
				want = append(want, md.UUID)
			}
		}
	}
	if d := cmp.Diff(want, p.AffectedUUIDs()); d != "" {
		t.Errorf("AffectedUUIDs (-want +got):\n%s", d)
	}
	if len(p.AffectedUUIDs()) <= len(m.Devices) {
		t.Errorf("AffectedUUIDs lists no MIG device: %v", p.AffectedUUIDs())
	}
}

func slicesContainsSlot(l mig.Layout, md gpu.MIGDevice) bool {
	for _, in := range l.Instances {
		if in.Profile == md.Profile && in.Placement == md.Placement {
			return true
		}
	}
	return false
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// newMIGGPU builds a MIG-capable GPU with MIG disabled and the given geometry.
func newMIGGPU(index int, profiles ...gpu.MIGProfileInfo) gpu.Device {
	return gpu.Device{
		Index: index, UUID: "GPU-test", Name: "TEST GPU", Product: "TEST-GPU",
		MIGCapable: true, MIGProfiles: profiles,
	}
}

func profile(name string, slices, max int, placements ...gpu.Placement) gpu.MIGProfileInfo {
	return gpu.MIGProfileInfo{Name: name, SliceCount: slices, MaxInstances: max, Placements: placements}
}

func place(start, size int) gpu.Placement { return gpu.Placement{Start: start, Size: size} }

func TestPlanErrorLines(t *testing.T) {
	e := &mig.PlanError{Config: "c", Source: "f.yaml", Problems: []mig.Problem{
		{GPU: 0, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: 1, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: 2, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: 2, Reason: "selected twice"},
		{GPU: 4, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: 6, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: 7, Profile: "1g.5gb", Reason: "not offered"},
		{GPU: -1, Reason: "about no gpu"},
	}}
	want := []string{"gpus 0-2, 4, 6-7: 1g.5gb: not offered", "gpu 2: selected twice", "about no gpu"}
	if d := cmp.Diff(want, e.Lines()); d != "" {
		t.Errorf("Lines (-want +got):\n%s", d)
	}
	wantErr := `mig config "c" in f.yaml cannot be applied; ` + strings.Join(want, "; ")
	if e.Error() != wantErr {
		t.Errorf("Error() = %q, want %q", e.Error(), wantErr)
	}
}

func TestPlanSummary(t *testing.T) {
	f := mustLoad(t, migPartedExample)
	m := discover(t, newSim(t, "dgx-a100"))
	tests := []struct {
		config string
		want   string
	}{
		{"all-disabled", `mig config "all-disabled": no gpu changes`},
		{"all-3g.20gb", `mig config "all-3g.20gb": gpus 0-7 to mig enabled: 3g.20gb@0 3g.20gb@4`},
		{"custom-config", `mig config "custom-config": gpu 4 to mig enabled: 1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5 1g.5gb@6; ` +
			`gpu 5 to mig enabled: 2g.10gb@0 2g.10gb@2 2g.10gb@4; gpu 6 to mig enabled: 3g.20gb@0 3g.20gb@4; ` +
			`gpu 7 to mig enabled: 2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4; 4 other gpus unchanged`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			if got := mustPlan(t, f, tt.config, m).Summary(); got != tt.want {
				t.Errorf("Summary() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
