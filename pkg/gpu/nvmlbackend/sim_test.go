package nvmlbackend_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// newSim opens a built-in simulated machine and the NVML backend over it.
func newSim(t testing.TB, name string, opts ...sim.Option) (*sim.Machine, *nvmlbackend.Backend) {
	t.Helper()
	m, err := sim.Open(name, opts...)
	if err != nil {
		t.Fatalf("sim.Open(%q): %v", name, err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:"+name), nvmlbackend.WithEventWait(10*time.Millisecond))
	if err != nil {
		t.Fatalf("nvmlbackend.New(sim:%s): %v", name, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m, b
}

// enableMIG turns MIG on for gpu and fills it with the given profiles.
func enableMIG(t testing.TB, b *nvmlbackend.Backend, index int, profiles ...string) {
	t.Helper()
	gputest.FillMIG(t, b, index, profiles...)
}

func TestSuiteOnEverySimulatedMachine(t *testing.T) {
	for _, name := range sim.BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			_, b := newSim(t, name)
			gputest.RunSuite(t, b)
		})
		t.Run(name+"/with MIG", func(t *testing.T) {
			_, b := newSim(t, name)
			m, err := b.Discover(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !m.Devices[0].MIGCapable {
				t.Skipf("skipping: %s has no MIG-capable GPU", name)
			}
			ps, err := b.MIGProfiles(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			one := ps[0].Name // the smallest profile, as many times as it fits
			var fill []string
			for range ps[0].MaxInstances {
				fill = append(fill, one)
			}
			for i := range m.Devices {
				enableMIG(t, b, i, fill...)
			}
			gputest.RunSuite(t, b)
		})
	}
}

// TestDiscoverMatchesMachine checks discovery against what these machines are
// in reality (NVIDIA's names and nvidia-smi topo -m of such servers).
func TestDiscoverMatchesMachine(t *testing.T) {
	tests := []struct {
		machine   string
		count     int
		product   string
		memoryMiB uint64
		arch      gpu.Architecture
		cc        string
		mig       bool
		numa      []int
		// links maps "a-b" to the nvidia-smi topo cell between GPUs a and b.
		links map[string]string
	}{
		{"dgx-a100", 8, "NVIDIA-A100-SXM4-40GB", 40960, gpu.ArchAmpere, "8.0", true, []int{0, 0, 0, 0, 1, 1, 1, 1},
			map[string]string{"0-1": "NV12", "0-7": "NV12", "3-4": "NV12"}},
		{"dgx-h100", 8, "NVIDIA-H100-80GB-HBM3", 81559, gpu.ArchHopper, "9.0", true, []int{0, 0, 0, 0, 1, 1, 1, 1},
			map[string]string{"0-1": "NV18", "0-7": "NV18", "5-6": "NV18"}},
		{"dgx-h200", 8, "NVIDIA-H200", 0, gpu.ArchHopper, "9.0", true, []int{0, 0, 0, 0, 1, 1, 1, 1},
			map[string]string{"0-1": "NV18", "2-6": "NV18"}},
		{"dgx-b200", 8, "NVIDIA-B200", 0, gpu.ArchBlackwell, "10.0", true, []int{0, 0, 0, 0, 1, 1, 1, 1},
			map[string]string{"0-1": "NV18", "1-5": "NV18"}},
		{"pcie-4xl40s", 4, "NVIDIA-L40S", 46068, gpu.ArchAda, "8.9", false, []int{0, 0, 1, 1},
			map[string]string{"0-1": "PIX", "2-3": "PIX", "0-2": "SYS", "1-3": "SYS"}},
		{"pcie-8xa100-80gb", 8, "NVIDIA-A100-80GB-PCIe", 81920, gpu.ArchAmpere, "8.0", true, []int{0, 0, 0, 0, 1, 1, 1, 1},
			map[string]string{"0-1": "NV12", "2-3": "NV12", "6-7": "NV12", "0-2": "NODE", "1-3": "NODE", "0-4": "SYS", "3-7": "SYS"}},
		{"ws-2xrtx4090", 2, "NVIDIA-GeForce-RTX-4090", 24564, gpu.ArchAda, "8.9", false, []int{0, 0},
			map[string]string{"0-1": "PHB"}},
	}
	for _, tt := range tests {
		t.Run(tt.machine, func(t *testing.T) {
			_, b := newSim(t, tt.machine)
			m, err := b.Discover(context.Background())
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if len(m.Devices) != tt.count {
				t.Fatalf("got %d GPUs, want %d", len(m.Devices), tt.count)
			}
			for i, d := range m.Devices {
				if d.Index != i || d.Product != tt.product || d.Architecture != tt.arch || d.ComputeCapability.String() != tt.cc ||
					d.MIGCapable != tt.mig || d.MIGEnabled || d.NUMANode != tt.numa[i] {
					t.Errorf("gpu %d = %+v, want product %s arch %s cc %s mig-capable %v numa %d",
						i, d, tt.product, tt.arch, tt.cc, tt.mig, tt.numa[i])
				}
				if tt.memoryMiB != 0 && d.MemoryMiB != tt.memoryMiB {
					t.Errorf("gpu %d memory %d MiB, want %d", i, d.MemoryMiB, tt.memoryMiB)
				}
			}
			for pair, want := range tt.links {
				var a, c int
				if _, err := fmt.Sscanf(pair, "%d-%d", &a, &c); err != nil {
					t.Fatal(err)
				}
				if got := gpu.TopologyCell(m.Topology.Between(a, c)); got != want {
					t.Errorf("topology GPU%d-GPU%d = %s, want %s", a, c, got, want)
				}
			}
			if m.Versions.Driver == "" || !strings.HasPrefix(m.Versions.CUDADriver, "1") {
				t.Errorf("versions = %+v", m.Versions)
			}
		})
	}
}

// mig profile names NVIDIA documents for each GPU (MIG user guide, "Supported profiles").
var wantProfiles = map[string][]string{
	"dgx-a100":         {"1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"},
	"dgx-h100":         {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
	"dgx-h200":         {"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"},
	"dgx-b200":         {"1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"},
	"pcie-8xa100-80gb": {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
}

func TestMIGEveryProfileAtEveryPlacement(t *testing.T) {
	ctx := context.Background()
	for machine, want := range wantProfiles {
		t.Run(machine, func(t *testing.T) {
			_, b := newSim(t, machine)
			if err := b.SetMIGMode(ctx, 0, true); err != nil {
				t.Fatalf("SetMIGMode: %v", err)
			}
			ps, err := b.MIGProfiles(ctx, 0)
			if err != nil {
				t.Fatalf("MIGProfiles: %v", err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.Name)
			}
			if !sameSet(got, want) {
				t.Fatalf("profiles = %v, want %v", got, want)
			}
			for _, p := range ps {
				for _, pl := range p.Placements {
					dev, err := b.CreateMIGDevice(ctx, 0, p.Name, pl.Start)
					if err != nil {
						t.Errorf("creating %s at %d: %v", p.Name, pl.Start, err)
						continue
					}
					if dev.Profile != p.Name || dev.Placement != pl || dev.Parent != 0 || dev.MemoryMiB == 0 {
						t.Errorf("created %s at %v, got %+v", p.Name, pl, dev)
					}
					m, err := b.Discover(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if got := m.Devices[0].MIGDevices; len(got) != 1 || got[0] != dev {
						t.Errorf("after creating %s at %d discovery shows %+v, want [%+v]", p.Name, pl.Start, got, dev)
					}
					if err := b.DestroyMIGDevice(ctx, 0, dev.GPUInstanceID); err != nil {
						t.Errorf("destroying %s at %d: %v", p.Name, pl.Start, err)
					}
				}
			}
			m, err := b.Discover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(m.Devices[0].MIGDevices); n != 0 {
				t.Errorf("%d MIG devices left after destroying all", n)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestMIGRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		machine string
		setup   func(t *testing.T, m *sim.Machine, b *nvmlbackend.Backend)
		do      func(b *nvmlbackend.Backend) error
		wantErr error
		wantMsg []string
	}{
		{
			name: "unknown profile", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0) },
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "1g.5gb", 0); return err },
			wantErr: gpu.ErrUnknownProfile, wantMsg: []string{`"1g.5gb"`, "gpu 0", "1g.10gb, 1g.10gb+me"},
		},
		{
			name: "malformed profile", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0) },
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "seven", 0); return err },
			wantErr: gpu.ErrUnknownProfile, wantMsg: []string{`"seven"`},
		},
		{
			name: "illegal placement", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0) },
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "3g.40gb", 2); return err },
			wantErr: gpu.ErrInvalidArgument, wantMsg: []string{"placement start 2", "legal starts: 0, 4"},
		},
		{
			name: "overlapping placement", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0, "4g.40gb") },
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "1g.10gb", 2); return err },
			wantErr: gpu.ErrInsufficientResources, wantMsg: []string{"1g.10gb at 2 on gpu 0"},
		},
		{
			name: "eight 1g slices on an A100", machine: "dgx-a100",
			setup: func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) {
				enableMIG(t, b, 0, "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb")
			},
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "1g.5gb", 6); return err },
			wantErr: gpu.ErrInsufficientResources,
		},
		{
			name: "MIG disabled", machine: "dgx-h100",
			do:      func(b *nvmlbackend.Backend) error { _, err := b.CreateMIGDevice(ctx, 0, "1g.10gb", 0); return err },
			wantErr: gpu.ErrNotSupported, wantMsg: []string{"gpu 0"},
		},
		{
			name: "GPU without MIG", machine: "pcie-4xl40s",
			do:      func(b *nvmlbackend.Backend) error { return b.SetMIGMode(ctx, 1, true) },
			wantErr: gpu.ErrNotSupported, wantMsg: []string{"enabling mig on gpu 1"},
		},
		{
			name: "profiles of a GPU without MIG", machine: "ws-2xrtx4090",
			do:      func(b *nvmlbackend.Backend) error { _, err := b.MIGProfiles(ctx, 0); return err },
			wantErr: gpu.ErrNotSupported, wantMsg: []string{"gpu 0 is not mig capable"},
		},
		{
			name: "unknown GPU index", machine: "dgx-h100",
			do:      func(b *nvmlbackend.Backend) error { return b.SetMIGMode(ctx, 8, true) },
			wantErr: gpu.ErrUnknownDevice, wantMsg: []string{"gpu 8"},
		},
		{
			name: "unknown GPU instance", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0, "7g.80gb") },
			do:      func(b *nvmlbackend.Backend) error { return b.DestroyMIGDevice(ctx, 0, 5) },
			wantErr: gpu.ErrUnknownDevice, wantMsg: []string{"gpu instance 5 on gpu 0"},
		},
		{
			name: "disabling MIG with instances", machine: "dgx-h100",
			setup:   func(t *testing.T, _ *sim.Machine, b *nvmlbackend.Backend) { enableMIG(t, b, 0, "3g.40gb") },
			do:      func(b *nvmlbackend.Backend) error { return b.SetMIGMode(ctx, 0, false) },
			wantErr: gpu.ErrInUse, wantMsg: []string{"disabling mig on gpu 0"},
		},
		{
			name: "mode change needs a reset", machine: "dgx-a100",
			setup: func(t *testing.T, m *sim.Machine, _ *nvmlbackend.Backend) {
				if err := m.SetResetRequiredForMIG(2, true); err != nil {
					t.Fatal(err)
				}
			},
			do:      func(b *nvmlbackend.Backend) error { return b.SetMIGMode(ctx, 2, true) },
			wantErr: gpu.ErrResetRequired, wantMsg: []string{"enabling mig on gpu 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, b := newSim(t, tt.machine)
			if tt.setup != nil {
				tt.setup(t, m, b)
			}
			before, err := b.Discover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.do(b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			after, err := b.Discover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range before.Devices {
				if fmt.Sprint(before.Devices[i].MIGDevices) != fmt.Sprint(after.Devices[i].MIGDevices) {
					t.Errorf("refused change altered gpu %d: %v -> %v", i, before.Devices[i].MIGDevices, after.Devices[i].MIGDevices)
				}
			}
		})
	}
}

func TestResetRequiredShowsPendingMode(t *testing.T) {
	ctx := context.Background()
	m, b := newSim(t, "dgx-a100")
	if err := m.SetResetRequiredForMIG(0, true); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMIGMode(ctx, 0, true); !errors.Is(err, gpu.ErrResetRequired) {
		t.Fatalf("SetMIGMode = %v, want ErrResetRequired", err)
	}
	mach, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := mach.Devices[0]; d.MIGEnabled || !d.MIGPendingEnabled {
		t.Errorf("before reset: enabled=%v pending=%v, want false/true", d.MIGEnabled, d.MIGPendingEnabled)
	}
	if err := m.ResetGPU(0); err != nil {
		t.Fatal(err)
	}
	mach, err = b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := mach.Devices[0]; !d.MIGEnabled || !d.MIGPendingEnabled {
		t.Errorf("after reset: enabled=%v pending=%v, want true/true", d.MIGEnabled, d.MIGPendingEnabled)
	}
}

// watch runs WatchEvents and returns its events; it waits until every GPU is
// registered so injected events cannot be missed.
func watch(t *testing.T, m *sim.Machine, b *nvmlbackend.Backend, gpus int) <-chan gpu.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan gpu.Event, 16)
	done := make(chan error, 1)
	before := m.Calls("RegisterEvents")
	go func() { done <- b.WatchEvents(ctx, func(e gpu.Event) { events <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchEvents: %v", err)
		}
	})
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return m.Calls("RegisterEvents")-before >= gpus, nil
	})
	if err != nil {
		t.Fatalf("events were not registered on %d GPUs: %v", gpus, err)
	}
	return events
}

func next(t *testing.T, events <-chan gpu.Event) gpu.Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return gpu.Event{}
	}
}

func TestEventsArrive(t *testing.T) {
	m, b := newSim(t, "dgx-h100")
	enableMIG(t, b, 5, "3g.40gb", "3g.40gb")
	events := watch(t, m, b, 8)
	uuid := func(i int) string { return m.UUID(i) }

	tests := []struct {
		name   string
		inject func() error
		want   gpu.Event
	}{
		{"xid", func() error { return m.InjectXID(2, 48) },
			gpu.Event{Kind: gpu.EventXID, Index: 2, UUID: uuid(2), XID: 48, GPUInstanceID: -1, ComputeInstanceID: -1}},
		{"double-bit ecc", func() error { return m.InjectECC(3, true) },
			gpu.Event{Kind: gpu.EventECCDoubleBit, Index: 3, UUID: uuid(3), GPUInstanceID: -1, ComputeInstanceID: -1}},
		{"single-bit ecc", func() error { return m.InjectECC(4, false) },
			gpu.Event{Kind: gpu.EventECCSingleBit, Index: 4, UUID: uuid(4), GPUInstanceID: -1, ComputeInstanceID: -1}},
		{"xid in a MIG instance", func() error { return m.InjectMIGXID(5, 2, 0, 43) },
			gpu.Event{Kind: gpu.EventXID, Index: 5, UUID: uuid(5), XID: 43, GPUInstanceID: 2, ComputeInstanceID: 0}},
		{"gpu falls off the bus", func() error { return m.LoseGPU(6) },
			gpu.Event{Kind: gpu.EventXID, Index: 6, UUID: uuid(6), XID: 79, GPUInstanceID: -1, ComputeInstanceID: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.inject(); err != nil {
				t.Fatal(err)
			}
			got := next(t, events)
			got.Time = time.Time{}
			if got != tt.want {
				t.Errorf("event = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTelemetryFollowsLoad(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m, b := newSim(t, "dgx-h100", sim.WithClock(clk))
	idle, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = m.SetLoad(1, sim.Load{SMActive: 0.9, TensorActive: 0.6, DRAMActive: 0.4,
		Processes: []sim.Process{{PID: 4242, UsedMemoryMiB: 20480, GPUInstanceID: -1, ComputeInstanceID: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(10 * time.Second))
	busy, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i0, b0, b1 := idle.Devices[1], busy.Devices[0], busy.Devices[1]
	if b1.GPUUtilPercent.Val != 90 || b0.GPUUtilPercent.Val != 0 {
		t.Errorf("utilisation busy=%d idle=%d, want 90 and 0", b1.GPUUtilPercent.Val, b0.GPUUtilPercent.Val)
	}
	if b1.PowerWatts.Val <= i0.PowerWatts.Val || b1.GPUTempC.Val <= i0.GPUTempC.Val || b1.SMClockMHz.Val <= i0.SMClockMHz.Val {
		t.Errorf("power/temperature/clock did not rise with load: idle %+v %+v %+v, busy %+v %+v %+v",
			i0.PowerWatts, i0.GPUTempC, i0.SMClockMHz, b1.PowerWatts, b1.GPUTempC, b1.SMClockMHz)
	}
	if b1.FBUsedMiB.Val < 20480 || len(b1.Processes) != 1 || b1.Processes[0].PID != 4242 || b1.Processes[0].UsedMemoryMiB != 20480 {
		t.Errorf("memory/processes: used %+v, processes %+v", b1.FBUsedMiB, b1.Processes)
	}
	energy := float64(b1.EnergyMilliJoules.Val-i0.EnergyMilliJoules.Val) / 1000
	if energy < b1.PowerWatts.Val*10*0.9 || energy > b1.PowerWatts.Val*10*1.1 {
		t.Errorf("energy over 10 s = %.0f J, want about %.0f J", energy, b1.PowerWatts.Val*10)
	}
	if g := b1.GPM; !g.TensorActive.Valid || !near(g.TensorActive.Val, 0.6) || !near(g.SMActive.Val, 0.9) || !near(g.DRAMActive.Val, 0.4) {
		t.Errorf("GPM readings %+v, want sm 0.9 tensor 0.6 dram 0.4", g)
	}
	if i0.GPM.TensorActive.Valid {
		t.Errorf("GPM readings on the first snapshot %+v, want absent", i0.GPM)
	}
}

func near(a, b float64) bool { return a > b-0.01 && a < b+0.01 }

func TestMIGTelemetry(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m, b := newSim(t, "dgx-h100", sim.WithClock(clk))
	enableMIG(t, b, 0, "3g.40gb", "2g.20gb", "1g.10gb")
	mach, err := b.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gi := mach.Devices[0].MIGDevices[0].GPUInstanceID
	if err := m.SetMIGLoad(0, gi, sim.Load{SMActive: 0.5, TensorActive: 0.25}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(5 * time.Second))
	snap, err := b.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := snap.Devices[0]
	if d.GPUUtilPercent.Valid {
		t.Errorf("whole-GPU utilisation %+v on a MIG GPU, want absent", d.GPUUtilPercent)
	}
	if len(d.MIG) != 3 {
		t.Fatalf("%d MIG readings, want 3", len(d.MIG))
	}
	for _, r := range d.MIG {
		want := 0.0
		if r.GPUInstanceID == gi {
			want = 0.25
		}
		if !r.GPM.TensorActive.Valid || !near(r.GPM.TensorActive.Val, want) || !r.FBTotalMiB.Valid {
			t.Errorf("MIG instance %d: %+v, want tensor %.2f", r.GPUInstanceID, r, want)
		}
	}
}

func TestUnsupportedCountersAreAbsent(t *testing.T) {
	_, b := newSim(t, "ws-2xrtx4090")
	snap, err := b.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d := snap.Devices[0]
	if d.Err != nil {
		t.Errorf("unsupported counters reported as errors: %v", d.Err)
	}
	if d.ECCCorrectedVolatile.Valid || d.RemappedRowsCorrectable.Valid || d.NVLinkTxKiB.Valid || d.GPM.GraphicsActive.Valid {
		t.Errorf("a GeForce card reports ECC %+v, remapped rows %+v, NVLink %+v, GPM %+v; want all absent",
			d.ECCCorrectedVolatile, d.RemappedRowsCorrectable, d.NVLinkTxKiB, d.GPM)
	}
	if !d.GPUTempC.Valid || !d.PowerWatts.Valid || !d.GPUUtilPercent.Valid {
		t.Errorf("basic readings missing: %+v", d)
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		fault sim.Fault
		check func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot)
	}{
		{
			name:  "gpu lost before discovery",
			fault: sim.Fault{GPU: 3, Return: nvml.ERROR_GPU_IS_LOST},
			check: func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
				wantLost(t, m, s, 3, "gpu 3")
			},
		},
		{
			name:  "gpu lost in the middle of discovery and sampling",
			fault: sim.Fault{GPU: 5, Call: "GetMigMode", Return: nvml.ERROR_GPU_IS_LOST},
			check: func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
				wantLost(t, m, s, 5, "reading mig mode of gpu 5 (GPU-")
			},
		},
		{
			name:  "gpu lost while reading power",
			fault: sim.Fault{GPU: 2, Call: "GetPowerUsage", Return: nvml.ERROR_GPU_IS_LOST},
			check: func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
				d := s.Devices[2]
				if !errors.Is(d.Err, gpu.ErrGPULost) || !d.GPUTempC.Valid || d.PowerWatts.Valid || d.SMClockMHz.Valid {
					t.Errorf("gpu 2 = err %v, temp %+v, power %+v, clock %+v; want lost after the temperature read",
						d.Err, d.GPUTempC, d.PowerWatts, d.SMClockMHz)
				}
			},
		},
		{
			name:  "temperature read times out",
			fault: sim.Fault{GPU: 1, Call: "GetTemperature", Return: nvml.ERROR_TIMEOUT},
			check: func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
				d := s.Devices[1]
				if !errors.Is(d.Err, gpu.ErrTimeout) || !strings.Contains(d.Err.Error(), "reading temperature") ||
					d.GPUTempC.Valid || !d.PowerWatts.Valid {
					t.Errorf("gpu 1 = err %v, temp %+v, power %+v; want timeout on temperature only", d.Err, d.GPUTempC, d.PowerWatts)
				}
			},
		},
		{
			name:  "counter not supported",
			fault: sim.Fault{GPU: 0, Call: "GetPcieReplayCounter", Return: nvml.ERROR_NOT_SUPPORTED},
			check: func(t *testing.T, m *gpu.Machine, s *gpu.Snapshot) {
				if d := s.Devices[0]; d.Err != nil || d.PCIeReplays.Valid {
					t.Errorf("gpu 0 = err %v, replays %+v; want absent without error", d.Err, d.PCIeReplays)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm, b := newSim(t, "dgx-h100")
			sm.InjectFault(tt.fault)
			m, err := b.Discover(ctx)
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			s, err := b.Sample(ctx)
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			if len(s.Devices) != 8 {
				t.Fatalf("snapshot has %d devices, want 8", len(s.Devices))
			}
			tt.check(t, m, s)
		})
	}
}

func wantLost(t *testing.T, m *gpu.Machine, s *gpu.Snapshot, index int, msg string) {
	t.Helper()
	if len(m.Devices) != 7 || len(m.Failed) != 1 || m.Failed[0].Index != index {
		t.Fatalf("discovery: %d devices, failed %+v; want 7 and gpu %d failed", len(m.Devices), m.Failed, index)
	}
	if err := m.Failed[0].Err; !errors.Is(err, gpu.ErrGPULost) || !strings.Contains(err.Error(), msg) {
		t.Errorf("failure = %v, want ErrGPULost mentioning %q", err, msg)
	}
	if err := m.Topology.Validate(); err != nil || len(m.Topology.Links) != 7 {
		t.Errorf("topology over the readable GPUs: %v (%d rows)", err, len(m.Topology.Links))
	}
	for _, d := range s.Devices {
		if lost := errors.Is(d.Err, gpu.ErrGPULost); lost != (d.Index == index) {
			t.Errorf("sample of gpu %d: err %v", d.Index, d.Err)
		}
	}
}

func TestInitFailure(t *testing.T) {
	m, err := sim.Open("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	m.InjectFault(sim.Fault{GPU: -1, Call: "Init", Return: nvml.ERROR_DRIVER_NOT_LOADED})
	_, err = nvmlbackend.New(m.NVML())
	if !errors.Is(err, gpu.ErrDriverNotLoaded) || !strings.Contains(err.Error(), "initialising nvml") {
		t.Errorf("New = %v, want ErrDriverNotLoaded while initialising nvml", err)
	}
}

// TestInitOncePerBackend: everything a node agent does initialises NVML once.
func TestInitOncePerBackend(t *testing.T) {
	ctx := context.Background()
	m, b := newSim(t, "dgx-a100")
	events := watch(t, m, b, 8)
	for range 3 {
		if _, err := b.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Sample(ctx); err != nil {
			t.Fatal(err)
		}
	}
	enableMIG(t, b, 0, "7g.40gb")
	if err := m.InjectXID(1, 31); err != nil {
		t.Fatal(err)
	}
	next(t, events)
	if n := m.Calls("Init"); n != 1 {
		t.Errorf("NVML Init called %d times, want 1", n)
	}
}
