package gpuaudit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/record"
	testclock "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// staticAllocations is a fixed PodResources view.
type staticAllocations []podresources.Holder

func (s staticAllocations) All() []podresources.Holder { return s }

// pidOwners gives each PID a fixed owner.
type pidOwners map[uint32]procmap.Owner

func (p pidOwners) Owner(pid uint32) (procmap.Owner, error) {
	o, ok := p[pid]
	if !ok {
		return procmap.Owner{}, fmt.Errorf("pid %d: %w", pid, procmap.ErrNoProcess)
	}
	return o, nil
}

func (p pidOwners) OwnerOf(cg procmap.ProcCgroup) procmap.Owner {
	return procmap.Owner{Kind: procmap.KindHost, CgroupPath: cg.Path}
}

func testMachine() *gpu.Machine {
	return &gpu.Machine{Devices: []gpu.Device{
		{Index: 0, UUID: "GPU-0", Minor: 0},
		{Index: 1, UUID: "GPU-1", Minor: 1},
		{Index: 2, UUID: "GPU-2", Minor: 2, MIGEnabled: true, MIGDevices: []gpu.MIGDevice{
			{Parent: 2, UUID: "MIG-2-a", GPUInstanceID: 1}, {Parent: 2, UUID: "MIG-2-b", GPUInstanceID: 2},
		}},
	}}
}

const capsMajor, uvmMajor = 508, 510

func pod(ns, name, container string) procmap.Owner {
	return procmap.Owner{Kind: procmap.KindPod, Namespace: ns, Pod: name, Container: container}
}

func TestJudge(t *testing.T) {
	owners := pidOwners{
		1: pod("ml", "whole", "cuda"), 2: pod("ml", "shared", "cuda"), 3: pod("ml", "mig", "cuda"),
		4: pod("ml", "nogpu", "main"), 5: pod("gpu-operator", "dcgm", "dcgm"),
		6: {Kind: procmap.KindHost}, 7: {Kind: procmap.KindUnknownPod},
	}
	alloc := staticAllocations{
		{Namespace: "ml", Pod: "whole", Container: "cuda", Resource: "nvidia.com/gpu", DeviceID: "GPU-0"},
		{Namespace: "ml", Pod: "shared", Container: "cuda", Resource: "nvidia.com/gpu.shared", DeviceID: "GPU-1::3"},
		{Namespace: "ml", Pod: "mig", Container: "cuda", Resource: "nvidia.com/mig-1g.10gb", DeviceID: "MIG-2-a"},
		{Namespace: "ml", Pod: "nogpu", Container: "main", Resource: "intel.com/sriov", DeviceID: "0000:af:00.1"},
	}
	gpuDev := func(minor uint32) DeviceNumber { return DeviceNumber{NVIDIAMajor, minor} }
	tests := []struct {
		name  string
		pid   uint32
		dev   DeviceNumber
		comm  string
		want  Class
		label string
	}{
		{"allocated gpu", 1, gpuDev(0), "python", ClassAllowed, "0"},
		{"another gpu", 1, gpuDev(1), "python", ClassUnauthorized, "1"},
		{"nvidiactl with a gpu", 1, gpuDev(255), "python", ClassAllowed, "nvidiactl"},
		{"uvm with a gpu", 1, DeviceNumber{uvmMajor, 0}, "python", ClassAllowed, "nvidia-uvm"},
		{"share of a gpu", 2, gpuDev(1), "python", ClassAllowed, "1"},
		{"mig parent gpu", 3, gpuDev(2), "python", ClassAllowed, "2"},
		{"own gpu instance capability", 3, DeviceNumber{capsMajor, capMinor(t, "gpu2/gi1/access")}, "python", ClassAllowed, "2"},
		{"own mig capability", 3, DeviceNumber{capsMajor, capMinor(t, "gpu2/gi1/ci0/access")}, "python", ClassAllowed, "2"},
		{"other mig instance", 3, DeviceNumber{capsMajor, capMinor(t, "gpu2/gi2/access")}, "python", ClassUnauthorized, "2"},
		{"mig config capability", 3, DeviceNumber{capsMajor, 1}, "python", ClassUnauthorized, "nvidia-cap-config"},
		{"pod without gpu: gpu", 4, gpuDev(0), "python", ClassUnauthorized, "0"},
		{"pod without gpu: nvidiactl", 4, gpuDev(255), "python", ClassUnauthorized, "nvidiactl"},
		{"gpu unknown to the model", 1, gpuDev(7), "python", ClassUnauthorized, "nvidia7"},
		{"trusted namespace", 5, gpuDev(1), "dcgm-exporter", ClassTrusted, "1"},
		{"host nvidia-smi", 6, gpuDev(1), "nvidia-smi", ClassHost, "1"},
		{"unknown pod", 7, gpuDev(1), "python", ClassUnattributed, "1"},
		{"gone process", 99, gpuDev(1), "python", ClassUnattributed, "1"},
	}
	cfg := Config{Majors: Majors{NVIDIA: NVIDIAMajor, UVM: uvmMajor, Caps: capsMajor}, TrustedNamespaces: []string{"gpu-operator"}, MIGMinorsPath: "/nonexistent"}
	a, err := New(cfg, Deps{Allocations: alloc, Owners: owners, Machine: testMachine()})
	if err != nil {
		t.Fatal(err)
	}
	a.table = newDeviceTable(a.cfg.Majors, testMachine(), readMIGMinorsSample(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := a.judge(Open{TGID: tt.pid, PID: tt.pid, Device: tt.dev, Comm: tt.comm})
			if v.Class != tt.want || v.Device.Label != tt.label {
				t.Errorf("verdict %s on %q, want %s on %q", v.Class, v.Device.Label, tt.want, tt.label)
			}
		})
	}
}

// TestViolationsAreCountedAndEventsRateLimited feeds unauthorized opens:
// every one is counted, Warning Events go out at most once per
// EventInterval per pod and device, and the series are bounded.
func TestViolationsAreCountedAndEventsRateLimited(t *testing.T) {
	clk := testclock.NewFakeClock(time.Unix(1000, 0))
	rec := record.NewFakeRecorder(100)
	owners := pidOwners{}
	for i := range 5 {
		owners[uint32(10+i)] = pod("ml", fmt.Sprintf("p%d", i), "main")
	}
	a, err := New(Config{Majors: Majors{NVIDIA: NVIDIAMajor}, MaxSeries: 3, MIGMinorsPath: "/nonexistent"},
		Deps{Allocations: staticAllocations{}, Owners: owners, Machine: testMachine(), Recorder: rec, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := a.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func(pid uint32) { a.handle(ctx, Open{TGID: pid, Device: DeviceNumber{NVIDIAMajor, 0}, Comm: "python"}) }
	for range 3 {
		open(10)
	}
	if got := testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("ml", "p0", "main", "0")); got != 3 {
		t.Errorf("unauthorized count %v, want 3", got)
	}
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d Events after three opens within the interval, want 1", n)
	}
	ev := <-rec.Events
	if !strings.HasPrefix(ev, "Warning UnauthorizedGPUAccess Process 10 (python) in container \"main\" opened GPU 0") {
		t.Errorf("Event %q", ev)
	}
	clk.Step(DefaultEventInterval)
	open(10)
	if n := len(rec.Events); n != 1 {
		t.Errorf("%d Events after the interval, want 1 more", n)
	}
	for pid := uint32(11); pid < 15; pid++ {
		open(pid)
	}
	if got := testutil.CollectAndCount(a.metrics.unauthorized); got != 3 {
		t.Errorf("%d series, want the bound 3", got)
	}
	if got := testutil.ToFloat64(a.metrics.droppedSeries); got != 2 {
		t.Errorf("dropped series count %v, want 2", got)
	}
	if got := testutil.ToFloat64(a.metrics.opens.WithLabelValues("unauthorized")); got != 8 {
		t.Errorf("unauthorized opens %v, want 8 (all counted by class)", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"nothing to watch", Config{}, "Watch is empty"},
		{"bad hook", Config{Majors: Majors{NVIDIA: 195}, Hooks: []Hook{"kprobe"}}, `unknown hook "kprobe"`},
		{"ring not a power of two", Config{Majors: Majors{NVIDIA: 195}, RingBufferBytes: 5000}, "RingBufferBytes 5000"},
		{"bad device", Config{Watch: []DeviceNumber{{Major: 1, Minor: 1 << 21}}}, "not a valid device number"},
		{"defaults", Config{Majors: Majors{NVIDIA: 195, UVM: 510}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			err := c.complete()
			if tt.wantErr == "" {
				if err != nil || len(c.Watch) != 2 || c.RingBufferBytes != DefaultRingBufferBytes {
					t.Errorf("complete = %v, %+v", err, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadMajors(t *testing.T) {
	p := t.TempDir() + "/devices"
	data := "Character devices:\n  1 mem\n195 nvidia-frontend\n195 nvidia\n508 nvidia-caps\n510 nvidia-uvm\n\nBlock devices:\n510 nvidia-uvm\n  8 sd\n"
	if err := writeFile(p, data); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMajors(p)
	if err != nil || m != (Majors{NVIDIA: 195, UVM: 510, Caps: 508}) {
		t.Errorf("ReadMajors = %+v, %v", m, err)
	}
	if _, err := ReadMajors(p + ".missing"); err == nil {
		t.Error("ReadMajors of a missing file succeeded")
	}
}
