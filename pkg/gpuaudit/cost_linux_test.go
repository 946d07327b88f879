//go:build linux && (amd64 || arm64)

package gpuaudit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAuditCost is `make bench-audit`: a syscall-heavy loop (getppid) and an
// open/close loop of a watched character device, without the program and
// with it attached on each hook, interleaved in rounds so that the shared
// machine's noise hits every configuration alike (the cgroup_device hook on
// the root of the cgroup2 hierarchy, mounted for the run when the host has
// none). It reports the median ns/op of each and its ratio to the baseline
// of the same run (target: at most 1.05 on the syscall loop), in the
// thread's CPU time, which on a shared machine is far steadier than wall
// time (reported beside it). Set TESSERA_BENCH_AUDIT=1 to run it and
// TESSERA_BENCH_OUT to also write the table to a file.
func TestAuditCost(t *testing.T) {
	if os.Getenv("TESSERA_BENCH_AUDIT") != "1" {
		t.Skip("set TESSERA_BENCH_AUDIT=1 (make bench-audit) to measure the audit's cost")
	}
	requireRoot(t)
	node := mknodNull(t)
	const rounds, syscalls, opens = 9, 2_000_000, 100_000
	configs := append([]Hook{""}, DefaultHooks...)
	// CPU time of this thread (user + system, the kernel's exact
	// sum_exec_runtime): unlike wall time it does not count the time other
	// tenants of a shared machine hold the CPU. Wall times are reported too.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys, sysWall := map[Hook][]float64{}, map[Hook][]float64{}
	opn, opnWall := map[Hook][]float64{}, map[Hook][]float64{}
	events := map[Hook]int{}
	ctx := context.Background()
	cgroup2 := newTestCgroups(t).mount // the cgroup_device hook's root
	for range rounds {
		for _, h := range configs {
			var p *probe
			drained := make(chan int, 1)
			if h != "" {
				cfg := Config{Watch: []DeviceNumber{{1, 3}}, Hooks: []Hook{h}, MountTracefs: true, Cgroup2Dir: cgroup2}
				if err := cfg.complete(); err != nil {
					t.Fatal(err)
				}
				var err error
				if p, err = attach(ctx, cfg); err != nil {
					var ae *attachError
					if !errors.As(err, &ae) {
						t.Fatal(err)
					}
					t.Logf("hook %s: %v", h, err)
					requireLoaded(t, h, ae.reason)
				}
				go func() {
					n := 0
					_ = p.read(func(Open) { n++ })
					drained <- n
				}()
			}
			start, cpu := time.Now(), threadCPU(t)
			for range syscalls {
				unix.Getppid()
			}
			sys[h] = append(sys[h], float64(threadCPU(t)-cpu)/syscalls)
			sysWall[h] = append(sysWall[h], float64(time.Since(start).Nanoseconds())/syscalls)
			start, cpu = time.Now(), threadCPU(t)
			for range opens {
				fd, err := unix.Open(node, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				_ = unix.Close(fd)
			}
			opn[h] = append(opn[h], float64(threadCPU(t)-cpu)/opens)
			opnWall[h] = append(opnWall[h], float64(time.Since(start).Nanoseconds())/opens)
			if p != nil {
				p.close()
				events[h] += <-drained
			}
		}
	}
	median := func(xs []float64) float64 { s := slices.Clone(xs); slices.Sort(s); return s[len(s)/2] }
	var b strings.Builder
	fmt.Fprintf(&b, "gpu audit cost: median of %d interleaved rounds (%d getppid, %d open+close of a watched 1:3 node per round);\n", rounds, syscalls, opens)
	fmt.Fprintf(&b, "ns/op and ratio in thread CPU time, wall-time ratio beside it\n")
	fmt.Fprintf(&b, "%-20s %14s %8s %8s %16s %8s %8s %12s\n", "hook", "syscall ns/op", "ratio", "wall", "open+close ns/op", "ratio", "wall", "events seen")
	for _, h := range configs {
		name := string(h)
		if h == "" {
			name = "none (baseline)"
		}
		fmt.Fprintf(&b, "%-20s %14.1f %8.3f %8.3f %16.1f %8.3f %8.3f %12d\n", name,
			median(sys[h]), median(sys[h])/median(sys[""]), median(sysWall[h])/median(sysWall[""]),
			median(opn[h]), median(opn[h])/median(opn[""]), median(opnWall[h])/median(opnWall[""]), events[h])
	}
	t.Log("\n" + b.String())
	if out := os.Getenv("TESSERA_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// threadCPU is the calling thread's CPU time in nanoseconds.
func threadCPU(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano()
}
