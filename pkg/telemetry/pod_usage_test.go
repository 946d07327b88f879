package telemetry

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// TestPodUsageAttribution covers what the golden scrape does not: several
// processes of one container are summed (utilisation capped at 1), host
// processes and pods the directory does not know are left out, a pod is
// attributed by its cgroup even when PodResources gives it nothing, and a
// process that ended between the sample and the lookup is skipped.
func TestPodUsageAttribution(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	m := n.discover(t)
	pods := podDirectory{}
	pods.add("ml", "busy", "cuda")
	pods.add("ml", "sneaky", "main")
	n.setLoad(t, 0, sim.Load{SMActive: 1, Processes: []sim.Process{
		{PID: 10, UsedMemoryMiB: 1000, SMUtil: 0.7, Cgroup: pods.cgroup("busy", "cuda")},
		{PID: 11, UsedMemoryMiB: 3000, SMUtil: 0.6, Cgroup: pods.cgroup("busy", "cuda")},
		{PID: 12, UsedMemoryMiB: 500, SMUtil: 0.1, Cgroup: "/system.slice/nvidia-persistenced.service"},
		{PID: 13, UsedMemoryMiB: 500, SMUtil: 0.1, Cgroup: pods.cgroup("unknown", "x")},
	}})
	n.setLoad(t, 2, sim.Load{SMActive: 0.2, Processes: []sim.Process{
		{PID: 20, UsedMemoryMiB: 2048, SMUtil: 0.2, Cgroup: pods.cgroup("sneaky", "main")},
	}})
	procs, err := procmap.New(procmap.Options{Cgroups: n.sim, Pods: pods, Clock: n.clock})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Backend: n.backend, Machine: m, Pods: &fakePods{}, Processes: procs, NodeName: "n", Clock: n.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.Refresh(context.Background())
	body := scrape(t, e.Handler())
	uuid0, uuid2 := m.Devices[0].UUID, m.Devices[2].UUID
	want := []string{
		`tessera_pod_gpu_memory_used_bytes{gpu="0",UUID="` + uuid0 + `",Hostname="n",container="cuda",namespace="ml",pod="busy"} 4.194304e+09`,
		`tessera_pod_gpu_memory_used_bytes{gpu="2",UUID="` + uuid2 + `",Hostname="n",container="main",namespace="ml",pod="sneaky"} 2.147483648e+09`,
	}
	if got := seriesOf(body, "tessera_pod_gpu_memory_used_bytes"); !slices.Equal(got, want) {
		t.Errorf("memory series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	want = []string{
		`tessera_pod_gpu_utilization_ratio{gpu="0",UUID="` + uuid0 + `",Hostname="n",container="cuda",namespace="ml",pod="busy"} 1`,
		`tessera_pod_gpu_utilization_ratio{gpu="2",UUID="` + uuid2 + `",Hostname="n",container="main",namespace="ml",pod="sneaky"} 0.2`,
	}
	if got := seriesOf(body, "tessera_pod_gpu_utilization_ratio"); !slices.Equal(got, want) {
		t.Errorf("utilization series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The processes end: the next pass has no per-pod series.
	n.setLoad(t, 0, sim.Load{})
	n.setLoad(t, 2, sim.Load{})
	n.clock.Step(10 * time.Second)
	e.Refresh(context.Background())
	body = scrape(t, e.Handler())
	if got := seriesOf(body, "tessera_pod_gpu_memory_used_bytes"); len(got) != 0 {
		t.Errorf("series after the processes ended: %v", got)
	}
}

// TestPodUsageNeedsProcessOwners checks that without ProcessOwners the
// collector is not run at all, so scrapes of agents that do not resolve
// processes stay as they were.
func TestPodUsageNeedsProcessOwners(t *testing.T) {
	n := newSimNode(t, "pcie-4xl40s")
	n.setLoad(t, 0, sim.Load{Processes: []sim.Process{{PID: 10, UsedMemoryMiB: 1, Cgroup: "/kubepods/pod" + podUID("x") + "/" + containerRuntimeID("x", "c")}}})
	e, err := New(Options{Backend: n.backend, NodeName: "n", Clock: n.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.Refresh(context.Background())
	body := scrape(t, e.Handler())
	if strings.Contains(body, "pod_usage") || strings.Contains(body, "tessera_pod_gpu_memory_used_bytes") {
		t.Error("per-pod usage exported without ProcessOwners")
	}
}
