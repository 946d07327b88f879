package sim

import (
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	clocktesting "k8s.io/utils/clock/testing"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// newMachine opens a machine with a fake clock and initialises its library.
func newMachine(t *testing.T, spec string) (*Machine, nvml.Interface, *clocktesting.FakePassiveClock) {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(epoch)
	m, err := Open(spec, WithClock(clk))
	if err != nil {
		t.Fatalf("Open(%q): %v", spec, err)
	}
	lib := m.NVML()
	if r := lib.Init(); r != nvml.SUCCESS {
		t.Fatalf("Init: %v", r)
	}
	t.Cleanup(func() { wantRet(t, "Shutdown", lib.Shutdown(), nvml.SUCCESS) })
	return m, lib, clk
}

// handle returns GPU index's handle.
func handle(t *testing.T, lib nvml.Interface, index int) nvml.Device {
	t.Helper()
	d, r := lib.DeviceGetHandleByIndex(index)
	if r != nvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(%d): %v", index, r)
	}
	return d
}

// wantRet fails the test unless got == want.
func wantRet(t *testing.T, what string, got, want nvml.Return) {
	t.Helper()
	if got != want {
		t.Fatalf("%s returned %v, want %v", what, got, want)
	}
}

// newMIGEnabledGPU returns GPU index of machine spec with MIG enabled.
func newMIGEnabledGPU(t *testing.T, spec string, index int) (*Machine, nvml.Interface, nvml.Device) {
	t.Helper()
	m, lib, _ := newMachine(t, spec)
	d := handle(t, lib, index)
	act, r := d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	wantRet(t, "SetMigMode", r, nvml.SUCCESS)
	wantRet(t, "SetMigMode activation", act, nvml.SUCCESS)
	return m, lib, d
}

// createMIGDevice creates a GPU instance of profile at start with one
// compute instance spanning it.
func createMIGDevice(t *testing.T, d nvml.Device, profile int, start uint32) (nvml.GpuInstance, nvml.ComputeInstance) {
	t.Helper()
	info, r := d.GetGpuInstanceProfileInfo(profile)
	wantRet(t, "GetGpuInstanceProfileInfo", r, nvml.SUCCESS)
	var size uint32
	places, _ := d.GetGpuInstancePossiblePlacements(&info)
	for _, p := range places {
		if p.Start == start {
			size = p.Size
		}
	}
	gi, r := d.CreateGpuInstanceWithPlacement(&info, &nvml.GpuInstancePlacement{Start: start, Size: size})
	wantRet(t, "CreateGpuInstanceWithPlacement", r, nvml.SUCCESS)
	ciProfile := map[uint32]int{1: nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 2: nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE,
		3: nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, 4: nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, 7: nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE}[info.SliceCount]
	ciInfo, r := gi.GetComputeInstanceProfileInfo(ciProfile, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	wantRet(t, "GetComputeInstanceProfileInfo", r, nvml.SUCCESS)
	ci, r := gi.CreateComputeInstance(&ciInfo)
	wantRet(t, "CreateComputeInstance", r, nvml.SUCCESS)
	return gi, ci
}
