package sim

import (
	"context"
	"reflect"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
)

// The simulation embeds go-nvml's moq mocks, and every call that reaches a
// mock's method appends a record to that mock's call log, which is never
// trimmed. A simulated agent makes a telemetry pass every few seconds for
// as long as it runs, so every call on the backend's paths must be answered
// by the simulation's own methods, never by a mock's. The tests below check
// that from both ends: the mocks' call logs stay empty, and the heap does
// not grow from pass to pass.

// busyMIGMachine returns a DGX H100 with seven 1g.10gb MIG devices on each
// GPU (56, the most a node has), a load with a process on every MIG device
// of GPUs 0-5 (GPUs 6 and 7 stay idle so that tests can reconfigure them),
// and the NVML backend over it.
func busyMIGMachine(t *testing.T) (*Machine, *nvmlbackend.Backend) {
	t.Helper()
	m, err := Open("dgx-h100")
	if err != nil {
		t.Fatalf("Open(dgx-h100): %v", err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:dgx-h100"), nvmlbackend.WithEventWait(time.Millisecond))
	if err != nil {
		t.Fatalf("nvmlbackend.New(sim:dgx-h100): %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for i := range m.NumGPUs() {
		gputest.FillMIG(t, b, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	mach, err := b.Discover(context.Background())
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	n := 0
	for _, d := range mach.Devices {
		n += len(d.MIGDevices)
		if d.Index >= 6 {
			continue
		}
		for _, md := range d.MIGDevices {
			l := Load{SMActive: 0.6, TensorActive: 0.3, DRAMActive: 0.4, MemCopyUtil: 0.2, PCIeTxBytesPerS: 1e9,
				NVLinkTxBytesPerS: 2e9, Processes: []Process{{PID: uint32(1000 + n), UsedMemoryMiB: 1024}}}
			if err := m.SetMIGLoad(d.Index, md.GPUInstanceID, l); err != nil {
				t.Fatalf("SetMIGLoad(%d, %d): %v", d.Index, md.GPUInstanceID, err)
			}
		}
	}
	if n != 56 {
		t.Fatalf("the machine has %d MIG devices, want 56", n)
	}
	return m, b
}

// watchEvents runs the backend's event watch until the test ends, waits
// until it has registered the GPUs (it waits on its event set), and returns
// the number of events it has handled so far.
func watchEvents(t *testing.T, m *Machine, b *nvmlbackend.Backend) func() int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	done := make(chan error, 1)
	go func() { done <- b.WatchEvents(ctx, func(gpu.Event) { n.Add(1) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchEvents: %v", err)
		}
	})
	waitFor(t, "the event watch to wait on its event set", func() bool { return m.Calls("EventSetWait") > 0 })
	return n.Load
}

// pass is one refresh of a simulated agent: a discovery and a telemetry
// snapshot (whose second and later calls compute GPM metrics).
func pass(t *testing.T, b *nvmlbackend.Backend) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.Discover(ctx); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if _, err := b.Sample(ctx); err != nil {
		t.Fatalf("Sample: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after 30 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestPassesKeepHeapBounded makes 2,000 passes over the busy MIG machine
// with an event watch running and compares the live heap after pass 200 with
// the live heap after pass 2,000.
//
// The bound, 256 KiB over 1,800 passes (about 145 bytes a pass), is more than
// 50 times the run-to-run difference of the live heap (a few KiB either way;
// a leak-free run measures about 0 bytes a pass) and well under what a leak
// of one small record per MIG device and pass grows (56 records of at least
// 4 bytes, 400 KiB over 1,800 passes, twice that with a slice's spare
// capacity). Smaller leaks, such as a record per GPU, are left to
// TestBackendCallsNeverReachTheMocks, which sees every record.
func TestPassesKeepHeapBounded(t *testing.T) {
	const (
		warmup = 200
		passes = 1800
		bound  = 256 << 10
	)
	m, b := busyMIGMachine(t)
	watchEvents(t, m, b)
	for range warmup {
		pass(t, b)
	}
	before := heapAfterGC()
	for range passes {
		pass(t, b)
	}
	after := heapAfterGC()
	growth := int64(after) - int64(before)
	t.Logf("live heap after pass %d: %d bytes, after pass %d: %d bytes (%+.1f bytes a pass)",
		warmup, before, warmup+passes, after, float64(growth)/passes)
	if growth >= bound {
		t.Errorf("the live heap grew by %d bytes over %d passes (%.0f bytes a pass), want less than %d",
			growth, passes, float64(growth)/passes, bound)
	}
}

// TestBackendCallsNeverReachTheMocks drives every path of the backend (
// discovery, telemetry with GPM, the event watch with XID and ECC events,
// injected faults, a lost and recovered GPU, MIG reconfiguration) and then
// checks that no call was answered by a go-nvml mock's method: their call
// logs grow without bound.
func TestBackendCallsNeverReachTheMocks(t *testing.T) {
	m, b := busyMIGMachine(t)
	events := watchEvents(t, m, b)
	steps := []struct {
		name string
		do   func() error
	}{
		{"XID 48 on gpu 1", func() error { return m.InjectXID(1, 48) }},
		{"XID 43 on a MIG device of gpu 2", func() error { return m.InjectMIGXID(2, 7, 0, 43) }},
		{"double-bit ECC error on gpu 3", func() error { return m.InjectECC(3, true) }},
		{"PCIe replays on gpu 4", func() error { return m.InjectPCIeReplays(4, 5) }},
		{"faults", func() error {
			m.InjectFault(Fault{GPU: 2, Call: "GetTemperature", Return: nvml.ERROR_UNKNOWN, Times: 3})
			m.InjectFault(Fault{GPU: -1, Call: "GetMemoryInfo", Return: nvml.ERROR_TIMEOUT, Times: 3})
			return nil
		}},
		{"lose gpu 5", func() error { return m.LoseGPU(5) }},
		{"recover gpu 5", func() error { return m.RecoverGPU(5) }},
		{"reconfigure gpu 6", func() error {
			mach, err := b.Discover(t.Context())
			if err != nil {
				return err
			}
			for _, md := range mach.Devices[6].MIGDevices {
				if err := b.DestroyMIGDevice(t.Context(), 6, md.GPUInstanceID); err != nil {
					return err
				}
			}
			gputest.FillMIG(t, b, 6, "3g.40gb", "2g.20gb", "1g.10gb")
			return nil
		}},
		{"disable MIG on gpu 7", func() error {
			mach, err := b.Discover(t.Context())
			if err != nil {
				return err
			}
			for _, md := range mach.Devices[7].MIGDevices {
				if err := b.DestroyMIGDevice(t.Context(), 7, md.GPUInstanceID); err != nil {
					return err
				}
			}
			return b.SetMIGMode(t.Context(), 7, false)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for range 5 {
			pass(t, b)
		}
	}
	// Two XIDs, an ECC error and the lost GPU.
	waitFor(t, "the event watch to handle 4 events", func() bool { return events() >= 4 })
	if m.Calls("GetTemperature") == 0 || m.Calls("GpmMigSampleGet") == 0 || m.Calls("EventSetWait") == 0 {
		t.Errorf("the passes made no GetTemperature, GpmMigSampleGet or EventSetWait call; the test does not cover telemetry, GPM and events")
	}
	for name, n := range m.mockCallLogs(t) {
		t.Errorf("%s: %d calls answered by the go-nvml mock instead of the simulation", name, n)
	}
}

// mockCallLogs returns the non-empty call logs of the machine's live mocks
// by mock type and method.
func (m *Machine) mockCallLogs(t *testing.T) map[string]int {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	logs := map[string]int{}
	add := func(mockPtr any) {
		v := reflect.ValueOf(mockPtr).Elem()
		calls := v.FieldByName("calls")
		if calls.Kind() != reflect.Struct {
			t.Fatalf("%s has no calls struct; go-nvml's mocks changed, update mockCallLogs", v.Type())
		}
		for i := range calls.NumField() {
			if n := calls.Field(i).Len(); n > 0 {
				logs[v.Type().String()+"."+calls.Type().Field(i).Name] += n
			}
		}
	}
	add(&m.lib.Interface)
	for _, d := range m.devs {
		add(&d.Device.Device)
		for _, gi := range d.gis {
			add(&gi.GpuInstance.GpuInstance)
			for _, ci := range gi.cis {
				add(&ci.ComputeInstance.ComputeInstance)
			}
		}
	}
	for s := range m.eventSets {
		add(s.EventSet)
	}
	m.stubMu.Lock()
	defer m.stubMu.Unlock()
	for _, md := range m.migMocks {
		add(md)
	}
	return logs
}
