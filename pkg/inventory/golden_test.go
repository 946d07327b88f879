package inventory_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/name, or rewrites it under -update
// (hack/update-generated.sh runs that).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file: %v (run: go test ./pkg/inventory -run %s -update)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got); run go test ./pkg/inventory -run %s -update if the change is intended:\n%s", path, t.Name(), diff)
	}
}

func renderLabels(l map[string]string) []byte {
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range l {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%s=%s\n", k, l[k])
	}
	return []byte(b.String())
}

// TestLabelsGolden checks the GFD labels of the simulated machines the
// issue names, with the exact names and value formats GFD writes.
func TestLabelsGolden(t *testing.T) {
	for _, build := range []func(testing.TB) scenario{dgxMIGMixed, dgxMIGSingle, l40sShared, rtx4090} {
		sc := build(t)
		t.Run(sc.name, func(t *testing.T) {
			l := inventory.BuildLabels(inventory.Snapshot{Machine: sc.machine, Options: sc.options,
				Resources: sc.resources, MachineType: sc.machineType})
			for k, v := range l {
				if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
					t.Errorf("label %s=%s is invalid: %v", k, v, errs)
				}
				if !strings.HasPrefix(k, "nvidia.com/") {
					t.Errorf("label %s is outside nvidia.com/", k)
				}
			}
			golden(t, "labels-"+sc.name+".golden", renderLabels(l))
		})
	}
}

// TestStatusGolden checks the GPUNode status of the same machines with
// pods holding devices and an unhealthy GPU.
func TestStatusGolden(t *testing.T) {
	for _, build := range []func(testing.TB) scenario{dgxMIGMixed, l40sShared, rtx4090} {
		sc := build(t)
		t.Run(sc.name, func(t *testing.T) {
			m := sc.machine
			var holders []podresources.Holder
			add := func(ns, pod, ctr, res, id string) {
				holders = append(holders, podresources.Holder{Namespace: ns, Pod: pod, Container: ctr, Resource: res, DeviceID: id})
			}
			var states []health.Status
			for _, d := range m.Devices {
				states = append(states, health.Status{Index: d.Index, UUID: d.UUID, State: health.Healthy})
			}
			states[1].State, states[1].Reason = health.Unhealthy, "xid 48 (double-bit ECC error)"
			switch sc.name {
			case "dgx-h100-mig-mixed":
				add("ml", "train-0", "trainer", "nvidia.com/gpu", m.Devices[0].UUID)
				add("ml", "train-0", "trainer", "nvidia.com/gpu", m.Devices[2].UUID)
				add("serve", "predictor", "kserve-container", "nvidia.com/mig-1g.10gb", m.Devices[5].MIGDevices[3].UUID)
				add("rdma", "nic-user", "main", "rdma/hca", "mlx5_0") // another plugin's device: not ours
			case "pcie-4xl40s-time-sliced":
				add("nb", "notebook-a", "jupyter", "nvidia.com/gpu", m.Devices[0].UUID+"::0")
				add("nb", "notebook-b", "jupyter", "nvidia.com/gpu", m.Devices[0].UUID+"::2")
				add("nb", "notebook-b", "jupyter", "nvidia.com/gpu", m.Devices[0].UUID+"::1")
			case "ws-2xrtx4090":
				add("dev", "render", "main", "nvidia.com/gpu", m.Devices[0].UUID)
			}
			st := inventory.BuildStatus(inventory.Snapshot{Machine: m, Options: sc.options, Resources: sc.resources,
				Health: states, Holders: holders, MachineType: sc.machineType,
				NodeLabels: map[string]string{inventory.MIGConfigLabel: "custom", inventory.MIGStateLabel: "success"}})
			out, err := yaml.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "status-"+sc.name+".golden", out)
		})
	}
}
