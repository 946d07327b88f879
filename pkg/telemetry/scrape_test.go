package telemetry

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/record"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

var update = flag.Bool("update", false, "rewrite testdata/scrape.golden")

const goldenPath = "testdata/scrape.golden"

// dgxScenario is a simulated DGX H100 node in a fixed state: whole GPUs, a
// time-shared GPU, two GPUs in MIG mode, pods holding some of each, load,
// XID and ECC events and an unhealthy GPU.
type dgxScenario struct {
	node     *simNode
	machine  *gpu.Machine
	pods     *fakePods
	tracker  *health.Tracker
	recorder *record.FakeRecorder
	exporter *Exporter
}

func newDGXScenario(t testing.TB) *dgxScenario {
	t.Helper()
	ctx := context.Background()
	n := newSimNode(t, "dgx-h100")
	gputest.FillMIG(t, n.backend, 4, "3g.40gb", "2g.20gb", "1g.10gb")
	gputest.FillMIG(t, n.backend, 5, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	m := n.discover(t)

	n.setLoad(t, 0, sim.Load{SMActive: 0.8, TensorActive: 0.6, DRAMActive: 0.5, MemCopyUtil: 0.4,
		PCIeTxBytesPerS: 2e9, PCIeRxBytesPerS: 1e9, NVLinkTxBytesPerS: 5e10, NVLinkRxBytesPerS: 4e10,
		Processes: []sim.Process{{PID: 100, UsedMemoryMiB: 60000, SMUtil: 0.8, MemUtil: 0.4, Cgroup: scenarioPods.cgroup("train-0", "trainer")}}})
	n.setLoad(t, 1, sim.Load{SMActive: 0.3, DRAMActive: 0.2, DecoderUtil: 0.25,
		Processes: []sim.Process{
			{PID: 200, UsedMemoryMiB: 10000, SMUtil: 0.27, MemUtil: 0.15, Cgroup: scenarioPods.cgroup("infer-a", "server")},
			{PID: 201, UsedMemoryMiB: 12000, SMUtil: 0.03, MemUtil: 0.01, Cgroup: scenarioPods.cgroup("infer-b", "server")},
		}})
	n.setLoad(t, 3, sim.Load{SMActive: 0.95, TensorActive: 0.9, DRAMActive: 0.7,
		Processes: []sim.Process{{PID: 300, UsedMemoryMiB: 70000, SMUtil: 0.95, MemUtil: 0.6, Cgroup: scenarioPods.cgroup("train-1", "trainer")}}})
	gis := func(index int) []gpu.MIGDevice { return m.Devices[index].MIGDevices }
	n.setMIGLoad(t, 4, gis(4)[0].GPUInstanceID, sim.Load{SMActive: 0.7, TensorActive: 0.5, DRAMActive: 0.4,
		Processes: []sim.Process{{PID: 400, UsedMemoryMiB: 30000, ComputeInstanceID: -1, Cgroup: scenarioPods.cgroup("finetune-0", "worker")}}})
	n.setMIGLoad(t, 5, gis(5)[2].GPUInstanceID, sim.Load{SMActive: 0.5, DRAMActive: 0.3,
		Processes: []sim.Process{{PID: 500, UsedMemoryMiB: 5000, ComputeInstanceID: -1, Cgroup: scenarioPods.cgroup("notebook-0", "jupyter")}}})
	if err := n.sim.InjectECC(3, false); err != nil {
		t.Fatal(err)
	}
	if err := n.sim.InjectPCIeReplays(2, 3); err != nil {
		t.Fatal(err)
	}

	uuid := func(i int) string { return m.Devices[i].UUID }
	pods := &fakePods{
		status: podresources.Status{OK: true, Updated: epoch},
		holders: []podresources.Holder{
			holder("ml", "train-0", "trainer", "nvidia.com/gpu", uuid(0)),
			holder("team-a", "infer-a", "server", "nvidia.com/gpu.shared", uuid(1)+"::0"),
			holder("team-b", "infer-b", "server", "nvidia.com/gpu.shared", uuid(1)+"::1"),
			holder("team-b", "infer-b", "server", "nvidia.com/gpu.shared", uuid(1)+"::2"),
			holder("ml", "train-1", "trainer", "nvidia.com/gpu", uuid(3)),
			holder("ml", "finetune-0", "worker", "nvidia.com/mig-3g.40gb", gis(4)[0].UUID),
			holder("team-c", "notebook-0", "jupyter", "nvidia.com/mig-1g.10gb", gis(5)[2].UUID),
			holder("team-c", "notebook-1", "jupyter", "nvidia.com/mig-1g.10gb", gis(5)[3].UUID),
			// Another device plugin's device on the node is not a GPU of this machine.
			holder("net", "router-0", "dpdk", "intel.com/sriov", "0000:af:00.1"),
		},
	}
	tracker := health.NewTracker(health.DefaultPolicy(), n.clock, deviceplugin.TrackedGPUs(m))
	recorder := record.NewFakeRecorder(16)
	procs, err := procmap.New(procmap.Options{Cgroups: n.sim, Pods: scenarioPods, Clock: n.clock})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{
		Backend:   n.backend,
		Machine:   m,
		Pods:      pods,
		Processes: procs,
		Health:    tracker,
		NodeName:  "dgx-01",
		Clock:     n.clock,
		Recorder:  recorder,
		FatalXID:  tracker.Policy().IsFatalXID,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []gpu.Event{
		{Kind: gpu.EventXID, Index: 7, UUID: uuid(7), XID: 79, GPUInstanceID: -1, ComputeInstanceID: -1},
		{Kind: gpu.EventXID, Index: 2, UUID: uuid(2), XID: 13, GPUInstanceID: -1, ComputeInstanceID: -1},
		{Kind: gpu.EventXID, Index: 2, UUID: uuid(2), XID: 13, GPUInstanceID: -1, ComputeInstanceID: -1},
		{Kind: gpu.EventXID, Index: 5, UUID: uuid(5), XID: 31, GPUInstanceID: gis(5)[2].GPUInstanceID, ComputeInstanceID: 0},
		{Kind: gpu.EventECCSingleBit, Index: 3, UUID: uuid(3), GPUInstanceID: -1, ComputeInstanceID: -1},
	} {
		tracker.Observe(ev)
		e.ObserveEvent(ev)
	}
	// Two passes 10s apart: GPM readings need a previous sample.
	e.Refresh(ctx)
	n.clock.Step(10 * time.Second)
	e.Refresh(ctx)
	return &dgxScenario{node: n, machine: m, pods: pods, tracker: tracker, recorder: recorder, exporter: e}
}

func TestGoldenScrape(t *testing.T) {
	s := newDGXScenario(t)
	got := scrape(t, s.exporter.Handler())
	if *update {
		if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/telemetry -run TestGoldenScrape -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("scrape differs from %s (run with -update to accept):\n%s", goldenPath, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for l := range strings.Lines(s) {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for l := range strings.Lines(want) {
		if !g[l] {
			b.WriteString("- " + l)
		}
	}
	for l := range strings.Lines(got) {
		if !w[l] {
			b.WriteString("+ " + l)
		}
	}
	return b.String()
}

// dcgmLintExceptions are promtool's lint findings that dcgm-exporter's own
// names and labels cause; Tessera keeps them for dashboard compatibility.
// Every other finding fails the test.
var dcgmLintExceptions = []*regexp.Regexp{
	regexp.MustCompile(`^DCGM_FI_[A-Z0-9_]+ counter metrics should have "_total" suffix$`),
	regexp.MustCompile(`^DCGM_FI_[A-Z0-9_]+ label names should be written in 'snake_case' not 'camelCase'$`),
	regexp.MustCompile(`^DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'$`),
}

func TestGoldenScrapePassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); skipping the exposition-format check")
	}
	golden, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(golden)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		// 3 is promtool's "lint problems found"; a parse error is 1.
	default:
		t.Fatalf("promtool check metrics %s: %v\n%s", filepath.Base(goldenPath), err, out)
	}
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		allowed := false
		for _, re := range dcgmLintExceptions {
			allowed = allowed || re.MatchString(line)
		}
		if !allowed {
			t.Errorf("promtool: %s", line)
		}
	}
}
