package gpu

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestProductName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"},
		{"NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB"},
		{"NVIDIA GeForce RTX 4090", "NVIDIA-GeForce-RTX-4090"},
		{"  Tesla  V100-SXM2-16GB ", "Tesla-V100-SXM2-16GB"},
		{"NVIDIA L40S", "NVIDIA-L40S"},
	}
	for _, tt := range tests {
		if got := ProductName(tt.name); got != tt.want {
			t.Errorf("ProductName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestPlacementOverlaps(t *testing.T) {
	tests := []struct {
		a, b Placement
		want bool
	}{
		{Placement{0, 4}, Placement{4, 4}, false},
		{Placement{0, 4}, Placement{3, 1}, true},
		{Placement{2, 2}, Placement{0, 8}, true},
		{Placement{6, 1}, Placement{5, 1}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Overlaps(tt.b); got != tt.want || tt.b.Overlaps(tt.a) != tt.want {
			t.Errorf("%v overlaps %v = %v, want %v (both ways)", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestTopologyValidate(t *testing.T) {
	good := NewTopology(3)
	good.Set(0, 1, Link{NVLinks: 12, PCIe: PathSingleSwitch})
	good.Set(0, 2, Link{PCIe: PathCrossCPU})
	good.Set(1, 2, Link{PCIe: PathCrossCPU})
	asym := NewTopology(2)
	asym.Links[0][1] = Link{NVLinks: 4, PCIe: PathHostBridge}
	asym.Links[1][0] = Link{PCIe: PathHostBridge}
	diag := NewTopology(2)
	diag.Links[1][1] = Link{PCIe: PathSingleSwitch}
	ragged := Topology{Links: [][]Link{{{}}, {}}}
	tests := []struct {
		name    string
		t       Topology
		wantErr string
	}{
		{"symmetric", good, ""},
		{"asymmetric", asym, "not symmetric at [0][1]"},
		{"bad diagonal", diag, "entry [1][1]"},
		{"ragged", ragged, "row 0 has 1 entries, want 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.t.Validate()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if got := TopologyCell(good.Between(1, 0)); got != "NV12" {
		t.Errorf("cell = %s, want NV12", got)
	}
	if got := TopologyCell(good.Between(2, 1)); got != "SYS" {
		t.Errorf("cell = %s, want SYS", got)
	}
}

func TestOptJSON(t *testing.T) {
	in := DeviceTelemetry{Index: 1, GPUTempC: Some[uint32](41), Err: errors.New("not serialised")}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	if !strings.Contains(s, `"GPUTempC":41`) || !strings.Contains(s, `"PowerWatts":null`) || strings.Contains(s, "not serialised") {
		t.Errorf("json = %s", s)
	}
	var out DeviceTelemetry
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	if out.GPUTempC != in.GPUTempC || out.PowerWatts.Valid {
		t.Errorf("round trip: temp %+v power %+v", out.GPUTempC, out.PowerWatts)
	}
}
