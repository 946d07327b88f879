package sim

import (
	"maps"
	"slices"
	"strings"
	"testing"

	nvdevice "github.com/NVIDIA/go-nvlib/pkg/nvlib/device"
	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

var migModels = []string{"a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-80gb", "h100-sxm5-80gb", "h200-sxm5-141gb", "b200-sxm-180gb"}

// singleGPU returns an initialised one-GPU machine of model with MIG enabled.
func singleGPU(t *testing.T, modelKey string, enableMIG bool) (*Machine, nvml.Interface, nvml.Device) {
	t.Helper()
	m, err := New(Profile{Name: "single-" + modelKey, GPUs: []GPUGroup{{Model: modelKey, Count: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	lib := m.NVML()
	wantRet(t, "Init", lib.Init(), nvml.SUCCESS)
	t.Cleanup(func() { wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS) })
	d := handle(t, lib, 0)
	if enableMIG {
		act, r := d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
		wantRet(t, "SetMigMode", r, nvml.SUCCESS)
		wantRet(t, "SetMigMode activation", act, nvml.SUCCESS)
	}
	return m, lib, d
}

func TestMIGEveryProfileAtEveryPlacement(t *testing.T) {
	wantProfiles := []int{
		nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.GPU_INSTANCE_PROFILE_3_SLICE,
		nvml.GPU_INSTANCE_PROFILE_4_SLICE, nvml.GPU_INSTANCE_PROFILE_7_SLICE, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1,
		nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2,
	}
	for _, key := range migModels {
		t.Run(key, func(t *testing.T) {
			_, _, d := singleGPU(t, key, true)
			var got []int
			for profile := range nvml.GPU_INSTANCE_PROFILE_COUNT {
				info, r := d.GetGpuInstanceProfileInfo(profile)
				if r == nvml.ERROR_NOT_SUPPORTED {
					continue
				}
				wantRet(t, "GetGpuInstanceProfileInfo", r, nvml.SUCCESS)
				got = append(got, profile)
				places, r := d.GetGpuInstancePossiblePlacements(&info)
				wantRet(t, "GetGpuInstancePossiblePlacements", r, nvml.SUCCESS)
				if len(places) == 0 {
					t.Fatalf("profile %d has no placements", profile)
				}
				for _, p := range places {
					if p.Start+p.Size > 8 || p.Size == 0 || p.Start%p.Size != 0 {
						t.Errorf("profile %d placement %+v is not aligned within 8 memory slices", profile, p)
					}
					gi, r := d.CreateGpuInstanceWithPlacement(&info, &p)
					if r != nvml.SUCCESS {
						t.Fatalf("profile %d at %+v: %v", profile, p, r)
					}
					gii, r := gi.GetInfo()
					if r != nvml.SUCCESS || gii.Placement != p || gii.ProfileId != info.Id || gii.Device != d {
						t.Errorf("GetInfo = %+v %v", gii, r)
					}
					if byID, r := d.GetGpuInstanceById(int(gii.Id)); r != nvml.SUCCESS || byID != gi {
						t.Errorf("GetGpuInstanceById(%d) = %v %v", gii.Id, byID, r)
					}
					if list, _ := d.GetGpuInstances(&info); len(list) != 1 || list[0] != gi {
						t.Errorf("GetGpuInstances = %v", list)
					}
					wantRet(t, "Destroy", gi.Destroy(), nvml.SUCCESS)
					if list, _ := d.GetGpuInstances(&info); len(list) != 0 {
						t.Errorf("GetGpuInstances after Destroy = %v", list)
					}
				}
			}
			slices.Sort(got)
			slices.Sort(wantProfiles)
			if !slices.Equal(got, wantProfiles) {
				t.Errorf("profiles %v, want %v", got, wantProfiles)
			}
		})
	}
}

func TestMIGRefusals(t *testing.T) {
	type step func(t *testing.T, d nvml.Device) nvml.Return
	profile := func(t *testing.T, d nvml.Device, id int) *nvml.GpuInstanceProfileInfo {
		t.Helper()
		info, r := d.GetGpuInstanceProfileInfo(id)
		wantRet(t, "GetGpuInstanceProfileInfo", r, nvml.SUCCESS)
		return &info
	}
	create := func(id int, start, size uint32) step {
		return func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.CreateGpuInstanceWithPlacement(profile(t, d, id), &nvml.GpuInstancePlacement{Start: start, Size: size})
			return r
		}
	}
	tests := []struct {
		name      string
		model     string
		enableMIG bool
		setup     []step
		try       step
		want      nvml.Return
	}{
		{name: "MIG disabled", model: "h100-sxm5-80gb", try: create(nvml.GPU_INSTANCE_PROFILE_1_SLICE, 0, 1), want: nvml.ERROR_NOT_SUPPORTED},
		{name: "MIG disabled, no placement", model: "a100-sxm4-40gb", try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.CreateGpuInstance(profile(t, d, nvml.GPU_INSTANCE_PROFILE_7_SLICE))
			return r
		}, want: nvml.ERROR_NOT_SUPPORTED},
		{name: "illegal start", model: "h100-sxm5-80gb", enableMIG: true, try: create(nvml.GPU_INSTANCE_PROFILE_3_SLICE, 2, 4), want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "illegal size", model: "h100-sxm5-80gb", enableMIG: true, try: create(nvml.GPU_INSTANCE_PROFILE_7_SLICE, 0, 7), want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "2g at the last slices", model: "a100-sxm4-40gb", enableMIG: true, try: create(nvml.GPU_INSTANCE_PROFILE_2_SLICE, 6, 2), want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "unknown profile", model: "b200-sxm-180gb", enableMIG: true, try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.CreateGpuInstance(&nvml.GpuInstanceProfileInfo{Id: nvml.GPU_INSTANCE_PROFILE_6_SLICE})
			return r
		}, want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "nil placement", model: "h200-sxm5-141gb", enableMIG: true, try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.CreateGpuInstanceWithPlacement(profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE), nil)
			return r
		}, want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "overlap", model: "h100-sxm5-80gb", enableMIG: true,
			setup: []step{create(nvml.GPU_INSTANCE_PROFILE_4_SLICE, 0, 4)},
			try:   create(nvml.GPU_INSTANCE_PROFILE_3_SLICE, 0, 4), want: nvml.ERROR_INSUFFICIENT_RESOURCES},
		{name: "partial overlap", model: "a100-sxm4-80gb", enableMIG: true,
			setup: []step{create(nvml.GPU_INSTANCE_PROFILE_1_SLICE, 5, 1)},
			try:   create(nvml.GPU_INSTANCE_PROFILE_3_SLICE, 4, 4), want: nvml.ERROR_INSUFFICIENT_RESOURCES},
		{name: "instance count exhausted (+me)", model: "h100-sxm5-80gb", enableMIG: true,
			setup: []step{create(nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, 0, 1)},
			try:   create(nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, 1, 1), want: nvml.ERROR_INSUFFICIENT_RESOURCES},
		{name: "full GPU", model: "a100-pcie-80gb", enableMIG: true,
			setup: []step{create(nvml.GPU_INSTANCE_PROFILE_7_SLICE, 0, 8)},
			try: func(t *testing.T, d nvml.Device) nvml.Return {
				_, r := d.CreateGpuInstance(profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE))
				return r
			}, want: nvml.ERROR_INSUFFICIENT_RESOURCES},
		{name: "disable MIG with instances", model: "h100-sxm5-80gb", enableMIG: true,
			setup: []step{create(nvml.GPU_INSTANCE_PROFILE_2_SLICE, 2, 2)},
			try: func(t *testing.T, d nvml.Device) nvml.Return {
				_, r := d.SetMigMode(nvml.DEVICE_MIG_DISABLE)
				return r
			}, want: nvml.ERROR_IN_USE},
		{name: "invalid MIG mode", model: "h100-sxm5-80gb", try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.SetMigMode(2)
			return r
		}, want: nvml.ERROR_INVALID_ARGUMENT},
		{name: "unknown instance ID", model: "h100-sxm5-80gb", enableMIG: true, try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.GetGpuInstanceById(3)
			return r
		}, want: nvml.ERROR_NOT_FOUND},
		{name: "instances while MIG disabled", model: "h100-sxm5-80gb", try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.GetGpuInstances(profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE))
			return r
		}, want: nvml.ERROR_NOT_SUPPORTED},
		{name: "profile out of range", model: "h100-sxm5-80gb", try: func(t *testing.T, d nvml.Device) nvml.Return {
			_, r := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_COUNT)
			return r
		}, want: nvml.ERROR_INVALID_ARGUMENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, d := singleGPU(t, tt.model, tt.enableMIG)
			for i, s := range tt.setup {
				if r := s(t, d); r != nvml.SUCCESS {
					t.Fatalf("setup step %d: %v", i, r)
				}
			}
			if got := tt.try(t, d); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMIGOnGPUWithoutMIG(t *testing.T) {
	for _, key := range []string{"l40s", "rtx-4090"} {
		t.Run(key, func(t *testing.T) {
			_, _, d := singleGPU(t, key, false)
			if _, r := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); r != nvml.ERROR_NOT_SUPPORTED {
				t.Errorf("SetMigMode = %v", r)
			}
			if _, _, r := d.GetMigMode(); r != nvml.ERROR_NOT_SUPPORTED {
				t.Errorf("GetMigMode = %v", r)
			}
			if _, r := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE); r != nvml.ERROR_NOT_SUPPORTED {
				t.Errorf("GetGpuInstanceProfileInfo = %v", r)
			}
			if n, r := d.GetMaxMigDeviceCount(); r != nvml.SUCCESS || n != 0 {
				t.Errorf("GetMaxMigDeviceCount = %d %v", n, r)
			}
			if _, r := d.GetMigDeviceHandleByIndex(0); r != nvml.ERROR_NOT_SUPPORTED {
				t.Errorf("GetMigDeviceHandleByIndex = %v", r)
			}
			if is, r := d.IsMigDeviceHandle(); is || r != nvml.SUCCESS {
				t.Errorf("IsMigDeviceHandle = %v %v", is, r)
			}
		})
	}
}

func TestMIGFillWithoutPlacement(t *testing.T) {
	_, _, d := singleGPU(t, "h100-sxm5-80gb", true)
	info, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	for i := range 7 {
		if n, r := d.GetGpuInstanceRemainingCapacity(&info); r != nvml.SUCCESS || n != 7-i {
			t.Fatalf("remaining capacity before instance %d = %d %v", i, n, r)
		}
		gi, r := d.CreateGpuInstance(&info)
		wantRet(t, "CreateGpuInstance", r, nvml.SUCCESS)
		gii, _ := gi.GetInfo()
		if gii.Placement.Start != uint32(i) || gii.Id != uint32(7+i) {
			t.Errorf("instance %d at %+v with ID %d, want start %d ID %d", i, gii.Placement, gii.Id, i, 7+i)
		}
	}
	if _, r := d.CreateGpuInstance(&info); r != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("8th 1g instance: %v", r)
	}
}

func TestMIGInstanceIDsFollowPlacement(t *testing.T) {
	_, _, d := singleGPU(t, "a100-sxm4-40gb", true)
	for _, tt := range []struct {
		profile int
		start   uint32
		wantID  uint32
	}{
		{nvml.GPU_INSTANCE_PROFILE_3_SLICE, 4, 2},
		{nvml.GPU_INSTANCE_PROFILE_2_SLICE, 0, 3},
		{nvml.GPU_INSTANCE_PROFILE_1_SLICE, 2, 9},
		{nvml.GPU_INSTANCE_PROFILE_1_SLICE, 3, 10},
	} {
		gi, _ := createMIGDevice(t, d, tt.profile, tt.start)
		if info, _ := gi.GetInfo(); info.Id != tt.wantID {
			t.Errorf("profile %d at %d got ID %d, want %d", tt.profile, tt.start, info.Id, tt.wantID)
		}
	}
}

func TestComputeInstances(t *testing.T) {
	_, _, d := singleGPU(t, "h100-sxm5-80gb", true)
	info, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_3_SLICE)
	gi, r := d.CreateGpuInstanceWithPlacement(&info, &nvml.GpuInstancePlacement{Start: 4, Size: 4})
	wantRet(t, "create 3g", r, nvml.SUCCESS)
	c1, _ := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	c2, _ := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if _, r := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("4c in a 3g instance: %v", r)
	}
	if p, _ := gi.GetComputeInstancePossiblePlacements(&c1); len(p) != 3 {
		t.Errorf("1c placements in 3g: %v", p)
	}
	big, r := gi.CreateComputeInstance(&c2)
	wantRet(t, "create 2c", r, nvml.SUCCESS)
	small, r := gi.CreateComputeInstance(&c1)
	wantRet(t, "create 1c", r, nvml.SUCCESS)
	if _, r := gi.CreateComputeInstance(&c1); r != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("compute instance beyond the slices: %v", r)
	}
	if n, _ := gi.GetComputeInstanceRemainingCapacity(&c1); n != 0 {
		t.Errorf("remaining 1c capacity %d", n)
	}
	bi, _ := big.GetInfo()
	si, _ := small.GetInfo()
	if bi.Id != 0 || si.Id != 1 || bi.Placement.Start != 0 || si.Placement.Start != 2 || si.GpuInstance != gi || si.Device != d {
		t.Errorf("compute instances %+v %+v", bi, si)
	}
	if got, r := gi.GetComputeInstanceById(1); r != nvml.SUCCESS || got != small {
		t.Errorf("GetComputeInstanceById(1) = %v %v", got, r)
	}
	if list, _ := gi.GetComputeInstances(&c1); len(list) != 1 || list[0] != small {
		t.Errorf("GetComputeInstances(1c) = %v", list)
	}
	wantRet(t, "destroy GI with compute instances", gi.Destroy(), nvml.ERROR_IN_USE)
	wantRet(t, "destroy 1c", small.Destroy(), nvml.SUCCESS)
	wantRet(t, "destroy 1c twice", small.Destroy(), nvml.ERROR_INVALID_ARGUMENT)
	wantRet(t, "destroy 2c", big.Destroy(), nvml.SUCCESS)
	wantRet(t, "destroy GI", gi.Destroy(), nvml.SUCCESS)
	if _, r := gi.GetInfo(); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("GetInfo on a destroyed instance: %v", r)
	}
}

func TestMIGDeviceHandles(t *testing.T) {
	m, lib, d := newMIGEnabledGPU(t, "dgx-h100", 3)
	if n, r := d.GetMaxMigDeviceCount(); r != nvml.SUCCESS || n != 7 {
		t.Fatalf("GetMaxMigDeviceCount = %d %v", n, r)
	}
	if _, r := d.GetMigDeviceHandleByIndex(0); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("handle 0 without instances: %v", r)
	}
	gi1g, _ := createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE, 6)
	_, _ = createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_3_SLICE, 0)
	_, ci2g := createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_2_SLICE, 4)

	type want struct {
		gi, ci   int
		name     string
		memMiB   uint64
		sms      uint32
		giSlices uint32
	}
	wants := []want{ // ordered by GPU instance ID: 3g@0 is 1, 2g@4 is 5, 1g@6 is 13
		{1, 0, "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40448, 48, 3},
		{5, 0, "NVIDIA H100 80GB HBM3 MIG 2g.20gb", 20096, 32, 2},
		{13, 0, "NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9984, 16, 1},
	}
	uuids := map[string]bool{}
	for i, w := range wants {
		h, r := d.GetMigDeviceHandleByIndex(i)
		wantRet(t, "GetMigDeviceHandleByIndex", r, nvml.SUCCESS)
		if again, _ := d.GetMigDeviceHandleByIndex(i); again != h {
			t.Errorf("handle %d not stable", i)
		}
		if is, r := h.IsMigDeviceHandle(); !is || r != nvml.SUCCESS {
			t.Errorf("IsMigDeviceHandle = %v %v", is, r)
		}
		giID, _ := h.GetGpuInstanceId()
		ciID, _ := h.GetComputeInstanceId()
		name, _ := h.GetName()
		if giID != w.gi || ciID != w.ci || name != w.name {
			t.Errorf("MIG device %d: GI %d CI %d %q, want %+v", i, giID, ciID, name, w)
		}
		mem, _ := h.GetMemoryInfo()
		attr, _ := h.GetAttributes()
		if mem.Total != w.memMiB<<20 || attr.MemorySizeMB != w.memMiB || attr.MultiprocessorCount != w.sms || attr.GpuInstanceSliceCount != w.giSlices || attr.ComputeInstanceSliceCount != w.giSlices {
			t.Errorf("MIG device %d: memory %d attributes %+v", i, mem.Total>>20, attr)
		}
		if parent, r := h.GetDeviceHandleFromMigDeviceHandle(); r != nvml.SUCCESS || parent != d {
			t.Errorf("parent = %v %v", parent, r)
		}
		u, _ := h.GetUUID()
		if !strings.HasPrefix(u, "MIG-") || uuids[u] {
			t.Errorf("MIG UUID %q", u)
		}
		uuids[u] = true
		if byUUID, r := lib.DeviceGetHandleByUUID(u); r != nvml.SUCCESS || byUUID != h {
			t.Errorf("DeviceGetHandleByUUID(%s) = %v %v", u, byUUID, r)
		}
	}
	if _, r := d.GetMigDeviceHandleByIndex(3); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("handle past the MIG devices: %v", r)
	}
	if _, r := d.GetMigDeviceHandleByIndex(7); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("handle past the maximum: %v", r)
	}
	// The UUID is derived from the parent and the instance IDs.
	if u, _ := m.NVML().DeviceGetHandleByIndex(3); u == nil {
		t.Fatal("no parent")
	}
	stale, _ := d.GetMigDeviceHandleByIndex(1)
	wantRet(t, "destroy 2g CI", ci2g.Destroy(), nvml.SUCCESS)
	if _, r := stale.GetUUID(); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("destroyed MIG device answered %v", r)
	}
	if h, _ := d.GetMigDeviceHandleByIndex(1); h == stale {
		t.Errorf("destroyed MIG device still enumerated")
	}
	_ = gi1g
}

func TestGoNvlibReadsSimulatedMIG(t *testing.T) {
	_, lib, d := newMIGEnabledGPU(t, "dgx-a100", 0)
	info, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_3_SLICE)
	gi, r := d.CreateGpuInstance(&info)
	wantRet(t, "CreateGpuInstance", r, nvml.SUCCESS)
	for _, ciProfile := range []int{nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE} {
		ci, _ := gi.GetComputeInstanceProfileInfo(ciProfile, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if _, r := gi.CreateComputeInstance(&ci); r != nvml.SUCCESS {
			t.Fatal(r)
		}
	}
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, 6)
	createMIGDevice(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2, 4)

	nvlib := nvdevice.New(lib)
	got := map[string]int{}
	err := nvlib.VisitMigDevices(func(i int, _ nvdevice.Device, j int, mig nvdevice.MigDevice) error {
		p, err := mig.GetProfile()
		if err != nil {
			return err
		}
		got[p.String()]++
		name, _ := mig.GetName()
		if !strings.HasSuffix(name, " MIG "+p.String()) {
			t.Errorf("MIG device name %q does not end in profile %s", name, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("VisitMigDevices: %v", err)
	}
	want := map[string]int{"2c.3g.20gb": 1, "1c.3g.20gb": 1, "1g.5gb+me": 1, "1g.10gb": 1}
	if !maps.Equal(got, want) {
		t.Errorf("go-nvlib saw %v, want %v", got, want)
	}
	var profiles []string
	dev, _ := nvlib.NewDevice(d)
	_ = dev.VisitMigProfiles(func(p nvdevice.MigProfile) error {
		profiles = append(profiles, p.String())
		return nil
	})
	for _, p := range []string{"1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"} {
		if !slices.Contains(profiles, p) {
			t.Errorf("go-nvlib does not see profile %s in %v", p, profiles)
		}
	}
}

func TestMIGModeNeedsReset(t *testing.T) {
	m, lib, _ := newMachine(t, "dgx-b200")
	d := handle(t, lib, 2)
	if err := m.SetResetRequiredForMIG(2, true); err != nil {
		t.Fatal(err)
	}
	act, r := d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	if r != nvml.SUCCESS || act != nvml.ERROR_RESET_REQUIRED {
		t.Fatalf("SetMigMode = %v, %v; want ERROR_RESET_REQUIRED, SUCCESS", act, r)
	}
	if cur, pend, _ := d.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_ENABLE {
		t.Errorf("GetMigMode = %d/%d, want 0/1", cur, pend)
	}
	info, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_7_SLICE)
	if _, r := d.CreateGpuInstance(&info); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("CreateGpuInstance with MIG pending: %v", r)
	}
	if err := m.ResetGPU(2); err != nil {
		t.Fatal(err)
	}
	if cur, pend, _ := d.GetMigMode(); cur != nvml.DEVICE_MIG_ENABLE || pend != nvml.DEVICE_MIG_ENABLE {
		t.Errorf("after reset GetMigMode = %d/%d, want 1/1", cur, pend)
	}
	gi, r := d.CreateGpuInstance(&info)
	wantRet(t, "CreateGpuInstance", r, nvml.SUCCESS)
	if err := m.ResetGPU(2); err != nil {
		t.Fatal(err)
	}
	if _, r := gi.GetInfo(); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("GPU instance survived a reset: %v", r)
	}
	if err := m.SetResetRequiredForMIG(8, true); err == nil {
		t.Errorf("SetResetRequiredForMIG accepted GPU 8")
	}
}

func TestMIGModeWithProcesses(t *testing.T) {
	m, _, d := singleGPU(t, "a100-sxm4-80gb", false)
	if err := m.SetLoad(0, Load{SMActive: 0.5, Processes: []Process{{PID: 42, UsedMemoryMiB: 1000}}}); err != nil {
		t.Fatal(err)
	}
	act, r := d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	if r != nvml.SUCCESS || act != nvml.ERROR_IN_USE {
		t.Errorf("SetMigMode with a process = %v, %v; want ERROR_IN_USE, SUCCESS", act, r)
	}
	if cur, pend, _ := d.GetMigMode(); cur != 0 || pend != 1 {
		t.Errorf("GetMigMode = %d/%d", cur, pend)
	}
	if err := m.ResetGPU(0); err != nil {
		t.Fatal(err)
	}
	if cur, _, _ := d.GetMigMode(); cur != 1 {
		t.Errorf("pending mode not applied by the reset")
	}
	if err := m.SetLoad(0, Load{Processes: []Process{{PID: 43, UsedMemoryMiB: 10}}}); err == nil {
		t.Errorf("SetLoad accepted a whole-GPU process in MIG mode")
	}
}
