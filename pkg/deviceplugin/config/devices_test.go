package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func gpuUUID(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

func migUUID(gpu, mig int) string {
	return fmt.Sprintf("MIG-00000000-0000-4000-9000-%06d%06d", gpu, mig)
}

// newGPUs builds whole-GPU candidates 0..n-1.
func newGPUs(n int) []DeviceRef {
	refs := make([]DeviceRef, n)
	for i := range refs {
		refs[i] = DeviceRef{Index: i, UUID: gpuUUID(i)}
	}
	return refs
}

// newMIGDevices builds MIG candidates: perGPU[g] slices on GPU g.
func newMIGDevices(perGPU ...int) []DeviceRef {
	var refs []DeviceRef
	for g, n := range perGPU {
		for m := 0; m < n; m++ {
			refs = append(refs, DeviceRef{Index: g, MIGIndex: m, UUID: migUUID(g, m), ParentUUID: gpuUUID(g)})
		}
	}
	return refs
}

func pick(from []DeviceRef, idx ...int) []DeviceRef {
	out := []DeviceRef{}
	for _, i := range idx {
		out = append(out, from[i])
	}
	return out
}

func TestResolveDevices(t *testing.T) {
	gpus := newGPUs(4)
	migs := newMIGDevices(2, 0, 3) // GPU 0: 0:0 0:1; GPU 2: 2:0 2:1 2:2
	tests := []struct {
		name       string
		resource   string // resources[1]; resources[0] is another resource, so paths show the index
		devices    string
		candidates []DeviceRef
		want       []DeviceRef
		wantErr    []string
	}{
		{name: "all", resource: "nvidia.com/gpu", devices: "all", candidates: gpus, want: gpus},
		{name: "default is all", resource: "nvidia.com/gpu", candidates: gpus, want: gpus},
		{name: "all of none", resource: "nvidia.com/mig-1g.10gb", devices: "all", candidates: nil, want: []DeviceRef{}},
		{name: "first two", resource: "nvidia.com/gpu", devices: "2", candidates: gpus, want: pick(gpus, 0, 1)},
		{name: "count of every device", resource: "nvidia.com/gpu", devices: "4", candidates: gpus, want: gpus},
		{name: "count beyond the node", resource: "nvidia.com/gpu", devices: "5", candidates: gpus,
			wantErr: []string{"sharing.timeSlicing.resources[1].devices: Invalid value: 5: selects the first 5 devices, but this node has 4 nvidia.com/gpu devices", "3 " + gpuUUID(3)}},
		{name: "indexes in candidate order", resource: "nvidia.com/gpu", devices: "[3, 1]", candidates: gpus, want: pick(gpus, 1, 3)},
		{name: "index and upper-case uuid of the same gpu", resource: "nvidia.com/gpu", devices: fmt.Sprintf("[2, %q]", "GPU-"+strings.ToUpper(strings.TrimPrefix(gpuUUID(2), "GPU-"))), candidates: gpus, want: pick(gpus, 2)},
		{name: "index beyond the node", resource: "nvidia.com/gpu", devices: "[1, 7]", candidates: gpus,
			wantErr: []string{`sharing.timeSlicing.resources[1].devices: Invalid value: ["7"]: selects no nvidia.com/gpu device on this node (devices: 0 GPU-`}},
		{name: "unknown uuids", resource: "nvidia.com/gpu", devices: fmt.Sprintf("[%q, %q]", gpuUUID(9), migUUID(0, 0)), candidates: gpus,
			wantErr: []string{fmt.Sprintf(`Invalid value: [%q,%q]: selects no nvidia.com/gpu device`, gpuUUID(9), migUUID(0, 0))}},
		{name: "gpu index selects its mig devices", resource: "nvidia.com/mig-1g.10gb", devices: "[2]", candidates: migs, want: pick(migs, 2, 3, 4)},
		{name: "gpu uuid selects its mig devices", resource: "nvidia.com/mig-1g.10gb", devices: fmt.Sprintf("[%q]", gpuUUID(0)), candidates: migs, want: pick(migs, 0, 1)},
		{name: "mig index", resource: "nvidia.com/mig-1g.10gb", devices: `["2:1", "0:0"]`, candidates: migs, want: pick(migs, 0, 3)},
		{name: "mig uuid", resource: "nvidia.com/mig-1g.10gb", devices: fmt.Sprintf("[%q]", migUUID(2, 2)), candidates: migs, want: pick(migs, 4)},
		{name: "first n mig devices", resource: "nvidia.com/mig-1g.10gb", devices: "3", candidates: migs, want: pick(migs, 0, 1, 2)},
		{name: "gpu without mig devices of the resource", resource: "nvidia.com/mig-1g.10gb", devices: "[0, 1]", candidates: migs,
			wantErr: []string{`sharing.timeSlicing.resources[1].devices: Invalid value: ["1"]: selects no nvidia.com/mig-1g.10gb device`, "0:0 " + migUUID(0, 0)}},
		{name: "mig index that does not exist", resource: "nvidia.com/mig-1g.10gb", devices: `["0:2"]`, candidates: migs,
			wantErr: []string{`Invalid value: ["0:2"]`}},
		{name: "mig index on whole gpus", resource: "nvidia.com/gpu", devices: `["0:0"]`, candidates: gpus,
			wantErr: []string{`Invalid value: ["0:0"]`}},
		{name: "list on a node without the resource", resource: "nvidia.com/mig-3g.40gb", devices: "[0]", candidates: nil,
			wantErr: []string{"selects no nvidia.com/mig-3g.40gb device on this node (it has none)"}},
		{name: "single strategy: mig devices as nvidia.com/gpu", resource: "nvidia.com/gpu", devices: `["0:1", 2]`, candidates: migs, want: pick(migs, 1, 2, 3, 4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other := "nvidia.com/mig-7g.80gb"
			if tt.resource == other {
				t.Fatal("pick another resource")
			}
			in := fmt.Sprintf("sharing:\n  timeSlicing:\n    resources:\n    - name: %s\n      replicas: 2\n    - name: %s\n      replicas: 3\n", other, tt.resource)
			if tt.devices != "" {
				in += "      devices: " + tt.devices + "\n"
			}
			c, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			r, ok := c.Resource(tt.resource)
			if !ok {
				t.Fatalf("no resource %s", tt.resource)
			}
			got, err := c.ResolveDevices(r, tt.candidates)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ResolveDevices = %v; want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\ndoes not hold %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveDevices: %v", err)
			}
			if got == nil {
				got = []DeviceRef{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ResolveDevices =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestResolveDevicesDoesNotAlias(t *testing.T) {
	c := Default()
	gpus := newGPUs(2)
	got, err := c.ResolveDevices(ReplicatedResource{Name: ResourceGPU, Devices: ReplicatedDevices{All: true}, Replicas: 2}, gpus)
	if err != nil {
		t.Fatal(err)
	}
	got[0].UUID = "changed"
	if gpus[0].UUID == "changed" {
		t.Error("ResolveDevices returned the caller's slice")
	}
}

func TestResolveDevicesUnknownResourcePath(t *testing.T) {
	c := Default()
	_, err := c.ResolveDevices(ReplicatedResource{Name: ResourceGPU, Devices: ReplicatedDevices{List: []string{"3"}}}, newGPUs(1))
	if err == nil || !strings.Contains(err.Error(), `sharing.timeSlicing.resources[nvidia.com/gpu].devices`) {
		t.Errorf("error %v does not name the resource", err)
	}
}
