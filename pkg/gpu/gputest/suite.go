// Package gputest holds the behavioural test suite every gpu.Backend must
// pass: the simulated machines run it everywhere, the real NVML backend runs it
// on a machine with a GPU. It checks invariants that hold on any hardware and
// never changes the machine (no MIG changes), so it is safe on a real node.
// It must not be imported by production code.
package gputest

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

var (
	busIDPattern   = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
	gpuUUIDPattern = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	migUUIDPattern = regexp.MustCompile(`^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	profilePattern = regexp.MustCompile(`^([0-9]c\.)?[0-9]g\.[0-9]+gb([+-][a-z,]+)?$`)
)

// RunSuite runs the read-only behavioural suite against b.
func RunSuite(t *testing.T, b gpu.Backend) {
	t.Helper()
	ctx := context.Background()
	var m *gpu.Machine
	t.Run("discover", func(t *testing.T) {
		var err error
		m, err = b.Discover(ctx)
		if err != nil {
			t.Fatalf("Discover: %v", err)
		}
		CheckMachine(t, m)
	})
	if m == nil {
		return
	}
	t.Run("sample", func(t *testing.T) {
		snap, err := b.Sample(ctx)
		if err != nil {
			t.Fatalf("Sample: %v", err)
		}
		CheckSnapshot(t, m, snap)
	})
	t.Run("mig profiles", func(t *testing.T) {
		for _, d := range m.Devices {
			ps, err := b.MIGProfiles(ctx, d.Index)
			if !d.MIGCapable {
				if !errors.Is(err, gpu.ErrNotSupported) {
					t.Errorf("MIGProfiles(gpu %d, not MIG capable) error = %v, want ErrNotSupported", d.Index, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("MIGProfiles(gpu %d): %v", d.Index, err)
			}
			for _, p := range ps {
				if !profilePattern.MatchString(p.Name) {
					t.Errorf("gpu %d profile name %q is not in mig-parted's format", d.Index, p.Name)
				}
				if len(p.Placements) == 0 || p.MaxInstances < 1 || p.MemoryMiB == 0 || p.MemoryMiB > d.MemoryMiB {
					t.Errorf("gpu %d profile %s is implausible: %+v", d.Index, p.Name, p)
				}
			}
		}
	})
	t.Run("events stop with the context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- b.WatchEvents(ctx, func(gpu.Event) {}) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchEvents after cancel: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("WatchEvents did not return within 30s of its context being cancelled")
		}
	})
}

// CheckMachine checks the invariants of a discovered machine.
func CheckMachine(t *testing.T, m *gpu.Machine) {
	t.Helper()
	if err := m.Topology.Validate(); err != nil {
		t.Errorf("topology: %v", err)
	}
	if len(m.Topology.Links) != len(m.Devices) {
		t.Errorf("topology has %d rows for %d devices", len(m.Topology.Links), len(m.Devices))
	}
	for _, f := range m.Failed {
		t.Errorf("gpu %d (%s) could not be read: %v", f.Index, f.UUID, f.Err)
	}
	if len(m.Devices) > 0 && (m.Versions.Driver == "" || m.Versions.CUDADriver == "") {
		t.Errorf("versions missing: %+v", m.Versions)
	}
	seen := map[string]bool{}
	for _, d := range m.Devices {
		if !gpuUUIDPattern.MatchString(d.UUID) {
			t.Errorf("gpu %d uuid %q is not GPU-<uuid>", d.Index, d.UUID)
		}
		if seen[d.UUID] {
			t.Errorf("duplicate uuid %s", d.UUID)
		}
		seen[d.UUID] = true
		if d.Product != gpu.ProductName(d.Name) || d.Product == "" {
			t.Errorf("gpu %d product %q does not match name %q", d.Index, d.Product, d.Name)
		}
		if !busIDPattern.MatchString(d.PCIBusID) {
			t.Errorf("gpu %d pci bus id %q is not in 0000:00:00.0 form", d.Index, d.PCIBusID)
		}
		if d.MemoryMiB < 1024 || d.ComputeCapability.Major < 3 || d.Architecture == "" {
			t.Errorf("gpu %d implausible: memory %d MiB, cc %s, arch %q", d.Index, d.MemoryMiB, d.ComputeCapability, d.Architecture)
		}
		if !d.MIGEnabled && len(d.MIGDevices) > 0 {
			t.Errorf("gpu %d has MIG off but %d MIG devices", d.Index, len(d.MIGDevices))
		}
		for i, g := range d.MIGDevices {
			if g.Parent != d.Index || !migUUIDPattern.MatchString(g.UUID) || !profilePattern.MatchString(g.Profile) {
				t.Errorf("gpu %d mig device %+v malformed", d.Index, g)
			}
			if seen[g.UUID] {
				t.Errorf("duplicate uuid %s", g.UUID)
			}
			seen[g.UUID] = true
			for _, o := range d.MIGDevices[i+1:] {
				if g.GPUInstanceID != o.GPUInstanceID && g.Placement.Overlaps(o.Placement) {
					t.Errorf("gpu %d mig devices overlap: %+v and %+v", d.Index, g, o)
				}
			}
		}
	}
}

// CheckSnapshot checks that a telemetry snapshot covers the machine with sane values.
func CheckSnapshot(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
	t.Helper()
	if len(s.Devices) != len(m.Devices)+len(m.Failed) {
		t.Errorf("snapshot has %d devices, machine %d", len(s.Devices), len(m.Devices)+len(m.Failed))
	}
	byIndex := map[int]gpu.Device{}
	for _, d := range m.Devices {
		byIndex[d.Index] = d
	}
	for _, d := range s.Devices {
		dev, ok := byIndex[d.Index]
		if !ok {
			continue
		}
		if d.Err != nil {
			t.Errorf("gpu %d: %v", d.Index, d.Err)
		}
		if d.UUID != dev.UUID {
			t.Errorf("gpu %d uuid %q, discovery said %q", d.Index, d.UUID, dev.UUID)
		}
		if v := d.GPUUtilPercent; v.Valid && v.Val > 100 {
			t.Errorf("gpu %d utilisation %d%%", d.Index, v.Val)
		}
		if v := d.GPUTempC; !v.Valid || v.Val > 120 {
			t.Errorf("gpu %d temperature %+v", d.Index, v)
		}
		if v := d.PowerWatts; v.Valid && (v.Val <= 0 || v.Val > 2000) {
			t.Errorf("gpu %d power %.1f W", d.Index, v.Val)
		}
		if !d.FBTotalMiB.Valid || !d.FBUsedMiB.Valid || d.FBUsedMiB.Val > d.FBTotalMiB.Val {
			t.Errorf("gpu %d framebuffer used %+v of %+v", d.Index, d.FBUsedMiB, d.FBTotalMiB)
		}
		if dev.MIGEnabled && len(d.MIG) != len(dev.MIGDevices) {
			t.Errorf("gpu %d: %d MIG readings for %d MIG devices", d.Index, len(d.MIG), len(dev.MIGDevices))
		}
	}
}
