package deviceplugin_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

func gpuIndex(idxs ...int) func(int, string) bool {
	return func(i int, _ string) bool { return slices.Contains(idxs, i) }
}

func TestCapacityThroughTheKubelet(t *testing.T) {
	h100Mixed := machine(t, "dgx-h100", sameLayout([]int{0, 1, 2, 3}, "3g.40gb", "2g.20gb", "1g.10gb"))
	a100All1g := machine(t, "dgx-a100", sameLayout(upTo(8), "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb"))
	h100Me := machine(t, "dgx-h100", map[int][]string{0: {"1g.10gb+me", "3g.40gb"}})
	plain := machine(t, "dgx-h100", nil)
	tests := []struct {
		name    string
		m       *gpu.Machine
		opts    deviceplugin.Options
		want    map[string]int64
		wantErr string
	}{
		{name: "whole GPUs", m: plain, opts: deviceplugin.Options{MIGStrategy: "none"},
			want: map[string]int64{"nvidia.com/gpu": 8}},
		{name: "none skips MIG-enabled GPUs", m: h100Mixed, opts: deviceplugin.Options{MIGStrategy: "none"},
			want: map[string]int64{"nvidia.com/gpu": 4}},
		{name: "mixed", m: h100Mixed, opts: deviceplugin.Options{MIGStrategy: "mixed"},
			want: map[string]int64{"nvidia.com/gpu": 4, "nvidia.com/mig-3g.40gb": 4, "nvidia.com/mig-2g.20gb": 4, "nvidia.com/mig-1g.10gb": 4}},
		{name: "mixed with media extensions", m: h100Me, opts: deviceplugin.Options{MIGStrategy: "mixed"},
			want: map[string]int64{"nvidia.com/gpu": 7, "nvidia.com/mig-1g.10gb.me": 1, "nvidia.com/mig-3g.40gb": 1}},
		{name: "single", m: a100All1g, opts: deviceplugin.Options{MIGStrategy: "single"},
			want: map[string]int64{"nvidia.com/gpu": 56}},
		{name: "single refuses mixed MIG modes", m: h100Mixed, opts: deviceplugin.Options{MIGStrategy: "single"},
			wantErr: "MIG is enabled on gpu 0"},
		{name: "single refuses mixed profiles", m: h100Me, opts: deviceplugin.Options{MIGStrategy: "single"},
			wantErr: "mig strategy single needs every gpu in the same MIG mode"},
		{name: "unknown strategy", m: plain, opts: deviceplugin.Options{MIGStrategy: "dual"},
			wantErr: `flags.migStrategy: unknown value "dual"`},
		{name: "time-slicing every GPU", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Replicas: 4}}},
			want: map[string]int64{"nvidia.com/gpu": 32}},
		{name: "time-slicing some GPUs under a new name", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Rename: "nvidia.com/gpu.shared", Replicas: 3, Matches: gpuIndex(0, 1)}}},
			want: map[string]int64{"nvidia.com/gpu": 6, "nvidia.com/gpu.shared": 6}},
		{name: "different replica counts per GPU", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{
				{Field: "r[0]", Resource: "nvidia.com/gpu", Rename: "nvidia.com/gpu.shared", Replicas: 2, Matches: gpuIndex(0, 1, 2, 3)},
				{Field: "r[1]", Resource: "nvidia.com/gpu", Rename: "nvidia.com/gpu.shared", Replicas: 7, Matches: gpuIndex(4)},
			}},
			want: map[string]int64{"nvidia.com/gpu": 3, "nvidia.com/gpu.shared": 15}},
		{name: "time-slicing MIG devices", m: h100Mixed, opts: deviceplugin.Options{MIGStrategy: "mixed",
			Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/mig-1g.10gb", Replicas: 2}}},
			want: map[string]int64{"nvidia.com/gpu": 4, "nvidia.com/mig-1g.10gb": 8, "nvidia.com/mig-2g.20gb": 4, "nvidia.com/mig-3g.40gb": 4}},
		{name: "partial sharing without rename", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Replicas: 2, Matches: gpuIndex(0)}}},
			wantErr: "would mix time-sliced and whole devices"},
		{name: "rule matching nothing", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{{Field: "sharing.timeSlicing.resources[0]", Resource: "nvidia.com/gpu", Replicas: 2, Matches: gpuIndex(9)}}},
			wantErr: "sharing.timeSlicing.resources[0].devices: matches no nvidia.com/gpu device"},
		{name: "overlapping rules", m: plain, opts: deviceplugin.Options{MIGStrategy: "none",
			Sharing: []deviceplugin.ShareRule{
				{Field: "r[0]", Resource: "nvidia.com/gpu", Replicas: 2},
				{Field: "r[1]", Resource: "nvidia.com/gpu", Replicas: 3, Matches: gpuIndex(1)},
			}},
			wantErr: "r[0] and r[1] both cover device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := deviceplugin.NewManager(pluginConfig(), nil)
			err := m.Update(tt.m, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Update error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			k := startKubelet(t)
			runPlugin(t, m)
			k.waitAllocatable(t, tt.want)
			capacity, _ := k.capacity()
			for name, n := range capacity {
				if strings.HasPrefix(name, "nvidia.com/") && tt.want[name] != n {
					t.Errorf("kubelet capacity %s = %d, want %d", name, n, tt.want[name])
				}
			}
		})
	}
}

func TestAllocateContainers(t *testing.T) {
	plain := machine(t, "dgx-h100", nil)
	uuids := map[string]bool{}
	for _, d := range plain.Devices {
		uuids[d.UUID] = true
	}
	for _, cdi := range []bool{false, true} {
		name := map[bool]string{false: "env", true: "cdi"}[cdi]
		t.Run(name, func(t *testing.T) {
			m := deviceplugin.NewManager(pluginConfig(), nil)
			o := deviceplugin.Options{MIGStrategy: "none"}
			if cdi {
				o.ListStrategies = []string{deviceplugin.ListCDICRI}
			}
			if err := m.Update(plain, o); err != nil {
				t.Fatal(err)
			}
			k := startKubelet(t)
			runPlugin(t, m)
			k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})
			got, err := k.admit(t, pod("two-containers", req("nvidia.com/gpu", 2), req("nvidia.com/gpu", 1)))
			if err != nil {
				t.Fatalf("admitting: %v", err)
			}
			seen := map[string]bool{}
			for i, want := range []int{2, 1} {
				var ids []string
				if cdi {
					for _, n := range strings.Split(got[i], ";") {
						id, ok := strings.CutPrefix(n, "nvidia.com/gpu=")
						if !ok {
							t.Fatalf("container %d CDI device %q is not nvidia.com/gpu=<uuid>", i, n)
						}
						ids = append(ids, id)
					}
				} else {
					ids = strings.Split(got[i], ",")
				}
				if len(ids) != want {
					t.Errorf("container %d got %v, want %d devices", i, ids, want)
				}
				for _, id := range ids {
					if !uuids[id] || seen[id] {
						t.Errorf("container %d got %q: unknown or already given to another container", i, id)
					}
					seen[id] = true
				}
			}
		})
	}
}

func TestFractionalRequestOnOneGPU(t *testing.T) {
	ws := machine(t, "ws-2xrtx4090", nil)
	m := deviceplugin.NewManager(pluginConfig(), nil)
	err := m.Update(ws, deviceplugin.Options{MIGStrategy: "none",
		Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Replicas: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})

	first, err := k.admit(t, pod("notebook-a", req("nvidia.com/gpu", 3)))
	if err != nil {
		t.Fatalf("3 of 4 units: %v", err)
	}
	if strings.Contains(first[0], ",") {
		t.Fatalf("3 units were spread over GPUs: %s", first[0])
	}
	second, err := k.admit(t, pod("notebook-b", req("nvidia.com/gpu", 3)))
	if err != nil {
		t.Fatalf("second 3 units: %v", err)
	}
	if strings.Contains(second[0], ",") || second[0] == first[0] {
		t.Fatalf("second request got %s (first %s): want the other GPU alone", second[0], first[0])
	}
	// One unit is left on each GPU: two units cannot come from one GPU.
	_, err = k.admit(t, pod("too-big", req("nvidia.com/gpu", 2)))
	if err == nil || !strings.Contains(err.Error(), "must be served by one GPU") {
		t.Fatalf("2 units with 1 free per GPU: error = %v, want a refusal saying one GPU must serve it", err)
	}
}

func TestHealthChangesAllocatable(t *testing.T) {
	mixed := machine(t, "dgx-h100", sameLayout([]int{0}, "3g.40gb", "3g.40gb"))
	h := &fakeHealth{}
	m := deviceplugin.NewManager(pluginConfig(), h)
	err := m.Update(mixed, deviceplugin.Options{MIGStrategy: "mixed",
		Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Rename: "nvidia.com/gpu.shared", Replicas: 2, Matches: gpuIndex(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	all := map[string]int64{"nvidia.com/gpu": 6, "nvidia.com/gpu.shared": 2, "nvidia.com/mig-3g.40gb": 2}
	k.waitAllocatable(t, all)

	steps := []struct {
		name    string
		uuid    string
		healthy bool
		want    map[string]int64
	}{
		{"whole GPU fails", mixed.Devices[5].UUID, false, map[string]int64{"nvidia.com/gpu": 5, "nvidia.com/gpu.shared": 2, "nvidia.com/mig-3g.40gb": 2}},
		{"shared GPU fails: all its units go", mixed.Devices[1].UUID, false, map[string]int64{"nvidia.com/gpu": 5, "nvidia.com/gpu.shared": 0, "nvidia.com/mig-3g.40gb": 2}},
		{"one MIG slice fails", mixed.Devices[0].MIGDevices[1].UUID, false, map[string]int64{"nvidia.com/gpu": 5, "nvidia.com/gpu.shared": 0, "nvidia.com/mig-3g.40gb": 1}},
		{"everything recovers (1)", mixed.Devices[5].UUID, true, map[string]int64{"nvidia.com/gpu": 6, "nvidia.com/gpu.shared": 0, "nvidia.com/mig-3g.40gb": 1}},
		{"everything recovers (2)", mixed.Devices[1].UUID, true, map[string]int64{"nvidia.com/gpu": 6, "nvidia.com/gpu.shared": 2, "nvidia.com/mig-3g.40gb": 1}},
		{"everything recovers (3)", mixed.Devices[0].MIGDevices[1].UUID, true, all},
	}
	for _, s := range steps {
		h.set(s.uuid, s.healthy)
		m.HealthChanged()
		k.waitAllocatable(t, s.want)
		_, alloc := k.capacity()
		capacity, _ := k.capacity()
		if capacity["nvidia.com/gpu"] != 6 {
			t.Errorf("%s: capacity changed to %v (allocatable %v); health must only change allocatable", s.name, capacity, alloc)
		}
	}
}

func TestReRegistersAfterKubeletRestart(t *testing.T) {
	plain := machine(t, "pcie-4xl40s", nil)
	m := deviceplugin.NewManager(pluginConfig(), nil)
	if err := m.Update(plain, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 4})
	for i := range 3 {
		start := time.Now()
		k.Restart()
		// The restarted kubelet restores its devices from the checkpoint, so
		// capacity alone proves nothing: admitting a pod needs the plugin's
		// Allocate through a live, re-registered endpoint.
		waitFor(t, "a pod admitted after the kubelet restart", func() bool {
			_, err := k.admit(t, pod(fmt.Sprintf("after-restart-%d", i), req("nvidia.com/gpu", 1)))
			if err != nil {
				k.Forget(fmt.Sprintf("after-restart-%d", i))
			}
			return err == nil
		})
		t.Logf("restart %d: re-registered and serving Allocate after %v", i+1, time.Since(start).Round(time.Millisecond))
	}
	if got := sockets(t); !slices.Contains(got, "tessera-nvidia.com_gpu.sock") {
		t.Errorf("plugin socket missing after restarts; directory has %v", got)
	}
}

func TestAgentRestartKeepsAllocations(t *testing.T) {
	plain := machine(t, "dgx-h100", nil)
	k := startKubelet(t)
	first := deviceplugin.NewManager(pluginConfig(), nil)
	if err := first.Update(plain, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	stop := runPlugin(t, first)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})
	before, err := k.admit(t, pod("training", req("nvidia.com/gpu", 4)))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	// The kubelet marks a disconnected plugin's devices unhealthy (they stay in
	// capacity through its grace period); wait for that before the new agent.
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 0})

	second := deviceplugin.NewManager(pluginConfig(), nil)
	if err := second.Update(plain, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
		t.Fatal(err)
	}
	runPlugin(t, second)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": 8})
	p := k.ActivePods()[0]
	opts, err := k.Manager().GetDeviceRunContainerOptions(t.Context(), p, &p.Spec.Containers[0])
	if err != nil || len(opts.Envs) != 1 || opts.Envs[0].Value != before[0] {
		t.Fatalf("after the agent restart the kubelet hands %+v (err %v), want the checkpointed %s", opts, err, before[0])
	}
	next, err := k.admit(t, pod("inference", req("nvidia.com/gpu", 4)))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range strings.Split(next[0], ",") {
		if strings.Contains(before[0], u) {
			t.Errorf("GPU %s handed out twice after the agent restart", u)
		}
	}
}

func TestPreferredAllocationIsHonoured(t *testing.T) {
	tests := []struct {
		machine string
		pods    int
		size    int64
		// linked reports whether two GPUs of one pod are as well connected as wanted.
		linked func(a, b gpu.Link) bool
	}{
		{"pcie-8xa100-80gb", 4, 2, func(l, _ gpu.Link) bool { return l.NVLinks == 12 }},
		{"pcie-4xl40s", 2, 2, func(l, _ gpu.Link) bool { return l.PCIe == gpu.PathSingleSwitch }},
		{"dgx-h100", 2, 4, func(l, _ gpu.Link) bool { return l.NVSwitch && l.PCIe <= gpu.PathSameCPU }},
	}
	for _, tt := range tests {
		t.Run(tt.machine, func(t *testing.T) {
			mach := machine(t, tt.machine, nil)
			pos := map[string]int{}
			for i, d := range mach.Devices {
				pos[d.UUID] = i
			}
			m := deviceplugin.NewManager(pluginConfig(), nil)
			if err := m.Update(mach, deviceplugin.Options{MIGStrategy: "none"}); err != nil {
				t.Fatal(err)
			}
			k := startKubelet(t)
			runPlugin(t, m)
			k.waitAllocatable(t, map[string]int64{"nvidia.com/gpu": int64(len(mach.Devices))})
			for i := range tt.pods {
				got, err := k.admit(t, pod(fmt.Sprintf("job-%d", i), req("nvidia.com/gpu", tt.size)))
				if err != nil {
					t.Fatal(err)
				}
				ids := strings.Split(got[0], ",")
				for a := range ids {
					for b := a + 1; b < len(ids); b++ {
						l := mach.Topology.Between(pos[ids[a]], pos[ids[b]])
						if !tt.linked(l, l) {
							t.Errorf("pod %d got GPUs %d and %d linked by %s; the kubelet did not get (or use) the preferred allocation",
								i, pos[ids[a]], pos[ids[b]], gpu.TopologyCell(l))
						}
					}
				}
			}
		})
	}
}

func TestPreferredMIGSliceAndShares(t *testing.T) {
	// GPU 0 has 1g slices at 0..6. The slices that exist are the geometry
	// (what gpu-scheduler sees of the GPU in its GPUNode): they are equal,
	// and the lowest placement goes first, as in the scheduler's model.
	mach := machine(t, "dgx-h100", map[int][]string{0: {"1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb"}})
	m := deviceplugin.NewManager(pluginConfig(), nil)
	err := m.Update(mach, deviceplugin.Options{MIGStrategy: "mixed", SharePolicy: deviceplugin.SharePacked,
		Sharing: []deviceplugin.ShareRule{{Field: "r[0]", Resource: "nvidia.com/gpu", Rename: "nvidia.com/gpu.shared", Replicas: 4, Matches: gpuIndex(6, 7)}}})
	if err != nil {
		t.Fatal(err)
	}
	k := startKubelet(t)
	runPlugin(t, m)
	k.waitAllocatable(t, map[string]int64{"nvidia.com/mig-1g.10gb": 7, "nvidia.com/gpu.shared": 8})
	got, err := k.admit(t, pod("inference", req("nvidia.com/mig-1g.10gb", 1)))
	if err != nil {
		t.Fatal(err)
	}
	var start = -1
	for _, g := range mach.Devices[0].MIGDevices {
		if g.UUID == got[0] {
			start = g.Placement.Start
		}
	}
	if start != 0 {
		t.Errorf("first 1g.10gb slice at start %d, want 0 (equal slices: the lowest placement, as gpu-scheduler plans it)", start)
	}
	// Packed shares: a 1-unit notebook, then a 2-unit one go to the same GPU.
	a, err := k.admit(t, pod("notebook-1", req("nvidia.com/gpu.shared", 1)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.admit(t, pod("notebook-2", req("nvidia.com/gpu.shared", 2)))
	if err != nil {
		t.Fatal(err)
	}
	if a[0] != b[0] {
		t.Errorf("packed policy spread notebooks over %s and %s; want one GPU filled first", a[0], b[0])
	}
}
