package deviceplugin_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
)

// plansOf is a PlanSource with a fixed answer: the real one
// (pkg/deviceplugin/plans) is tested against a real kube-apiserver and the
// kubelet's PodResources server in pkg/agent.
type plansOf struct {
	plans []deviceplugin.Plan
	err   error
}

func (p plansOf) PendingPlans(context.Context) ([]deviceplugin.Plan, error) { return p.plans, p.err }

// TestPreferredAllocationFollowsThePlan admits one pod through the kubelet's
// device manager with the given pending plans and checks which devices the
// kubelet gave it, and whether they came from a plan.
func TestPreferredAllocationFollowsThePlan(t *testing.T) {
	mach := machine(t, "dgx-h100", map[int][]string{0: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}})
	gpuUUID := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, mach.Devices[i].UUID)
		}
		return out
	}
	slice := func(start int) string {
		for _, d := range mach.Devices[0].MIGDevices {
			if d.Placement.Start == start {
				return d.UUID
			}
		}
		t.Fatalf("no 1g.10gb slice at %d", start)
		return ""
	}
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	plan := func(pod string, created time.Time, resource string, want int64, devices ...string) deviceplugin.Plan {
		return deviceplugin.Plan{Pod: "default/" + pod, Created: created, Devices: devices, Want: map[string]int64{resource: want}}
	}
	admitting := func(p deviceplugin.Plan) deviceplugin.Plan { p.Admitting = true; return p }
	const whole, mig, shared = "nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared"
	tests := []struct {
		name     string
		source   plansOf
		resource string
		size     int64
		want     []string // the devices (GPU or MIG UUIDs) the pod gets; nil: the allocator's own
		wantFrom string
	}{
		{name: "the plan of the pod the kubelet admits, though another is older", resource: whole, size: 2,
			source: plansOf{plans: []deviceplugin.Plan{plan("older", t0.Add(-time.Second), whole, 2, gpuUUID(1, 2)...), admitting(plan("job", t0, whole, 2, gpuUUID(3, 4)...))}},
			want:   gpuUUID(3, 4), wantFrom: deviceplugin.PreferredFromPlan},
		{name: "the oldest plan when the kubelet lists none", resource: whole, size: 2,
			source: plansOf{plans: []deviceplugin.Plan{plan("newer", t0.Add(time.Second), whole, 2, gpuUUID(1, 2)...), plan("job", t0, whole, 2, gpuUUID(3, 4)...)}},
			want:   gpuUUID(3, 4), wantFrom: deviceplugin.PreferredFromPlan},
		{name: "two plans of the same second: ambiguous", resource: whole, size: 2,
			source:   plansOf{plans: []deviceplugin.Plan{plan("a", t0, whole, 2, gpuUUID(1, 2)...), plan("b", t0, whole, 2, gpuUUID(4, 5)...)}},
			wantFrom: deviceplugin.PreferredOwn},
		{name: "a plan for a smaller request", resource: whole, size: 2,
			source:   plansOf{plans: []deviceplugin.Plan{admitting(plan("job", t0, whole, 1, gpuUUID(4)...))}},
			wantFrom: deviceplugin.PreferredOwn},
		{name: "a plan naming a GPU in MIG mode", resource: whole, size: 2,
			source:   plansOf{plans: []deviceplugin.Plan{admitting(plan("job", t0, whole, 2, gpuUUID(0, 1)...))}},
			wantFrom: deviceplugin.PreferredOwn},
		{name: "no plan source answer", resource: whole, size: 2, source: plansOf{err: errors.New("apiserver unreachable")},
			wantFrom: deviceplugin.PreferredOwn},
		{name: "a MIG slice other than the allocator's", resource: mig, size: 1,
			source: plansOf{plans: []deviceplugin.Plan{admitting(plan("predictor", t0, mig, 1, slice(6)))}},
			want:   []string{slice(6)}, wantFrom: deviceplugin.PreferredFromPlan},
		{name: "shares of the planned GPU", resource: shared, size: 2,
			source: plansOf{plans: []deviceplugin.Plan{admitting(plan("notebook", t0, shared, 2, gpuUUID(7)...))}},
			want:   gpuUUID(7), wantFrom: deviceplugin.PreferredFromPlan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := pluginConfig()
			cfg.Plans = tt.source
			m := deviceplugin.NewManager(cfg, nil)
			err := m.Update(mach, deviceplugin.Options{MIGStrategy: "mixed", SharePolicy: deviceplugin.SharePacked,
				Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: whole, Rename: shared, Replicas: 4, Matches: gpuIndex(6, 7)}}})
			if err != nil {
				t.Fatal(err)
			}
			k := startKubelet(t)
			runPlugin(t, m)
			k.waitAllocatable(t, map[string]int64{whole: 5, mig: 7, shared: 8})
			got, err := k.admit(t, pod("job", req(tt.resource, tt.size)))
			if err != nil {
				t.Fatal(err)
			}
			devs := strings.Split(got[0], ",")
			slices.Sort(devs)
			devs = slices.Compact(devs) // shares: one UUID per unit
			if tt.want != nil && !slices.Equal(devs, tt.want) {
				t.Errorf("got %v, want %v", devs, tt.want)
			}
			if n := m.PreferredAllocations()[tt.wantFrom]; n != 1 {
				t.Errorf("preferred allocations %v, want one from %s", m.PreferredAllocations(), tt.wantFrom)
			}
		})
	}
}
