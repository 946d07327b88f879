package inventory_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
)

func TestLinksRoundTrip(t *testing.T) {
	for _, build := range []func(testing.TB) scenario{dgxMIGMixed, l40sShared, rtx4090} {
		sc := build(t)
		t.Run(sc.name, func(t *testing.T) {
			rows := inventory.EncodeLinks(sc.machine.Topology)
			got, err := inventory.DecodeLinks(rows, len(sc.machine.Devices))
			if err != nil {
				t.Fatalf("DecodeLinks(%q): %v", rows, err)
			}
			if diff := cmp.Diff(sc.machine.Topology, got); diff != "" {
				t.Errorf("topology after a round trip (-want +got):\n%s", diff)
			}
		})
	}
	if rows := inventory.EncodeLinks(gpu.Topology{}); rows != nil {
		t.Errorf("EncodeLinks of no GPUs = %q, want nil", rows)
	}
}

// TestSharedNames keeps the names the inventory mirrors equal to their
// owners'.
func TestSharedNames(t *testing.T) {
	if inventory.MIGConfigLabel != reconcile.MIGConfigLabel || inventory.MIGStateLabel != reconcile.MIGStateLabel {
		t.Errorf("layout labels %s, %s differ from the reconciler's %s, %s",
			inventory.MIGConfigLabel, inventory.MIGStateLabel, reconcile.MIGConfigLabel, reconcile.MIGStateLabel)
	}
	sc := dgxMIGMixed(t)
	l := inventory.BuildLabels(inventory.Snapshot{Machine: sc.machine, Options: sc.options, Resources: sc.resources})
	for _, d := range sc.machine.Devices {
		for _, m := range d.MIGDevices {
			if _, ok := l[deviceplugin.MIGResourceName(m.Profile)+".count"]; !ok {
				t.Errorf("no %s.count label for profile %s", deviceplugin.MIGResourceName(m.Profile), m.Profile)
			}
		}
	}
}

func TestBuildWithoutGPUs(t *testing.T) {
	none := &gpu.Machine{Backend: "none", Reason: "no NVIDIA driver"}
	st := inventory.BuildStatus(inventory.Snapshot{Machine: none})
	want := "0/0"
	if st.Summary.Allocation != want || st.Reason != none.Reason || st.MIGStrategy != "none" || len(st.GPUs) != 0 {
		t.Errorf("status of a machine without GPUs = %+v", st)
	}
	if l := inventory.BuildLabels(inventory.Snapshot{Machine: none}); len(l) != 0 {
		t.Errorf("labels of a machine without GPUs = %v, want none (GFD writes none)", l)
	}
}
