//go:build linux && (amd64 || arm64)

package gpuaudit

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	testclock "k8s.io/utils/clock/testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	prt "github.com/tessera-gpu/tessera/pkg/podresources/podresourcestest"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// Child modes of the test binary: open a path (TESSERA_AUDIT_OPEN) N times
// (TESSERA_AUDIT_OPENS), after a line on stdin when TESSERA_AUDIT_WAIT is
// set, and then exit once stdin closes; first try to open a path whose open
// must fail (TESSERA_AUDIT_TRY) when set. Or make a 1:3 device node
// (TESSERA_AUDIT_MKNOD).
func TestMain(m *testing.M) {
	if path := os.Getenv("TESSERA_AUDIT_MKNOD"); path != "" {
		if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if path := os.Getenv("TESSERA_AUDIT_OPEN"); path != "" {
		os.Exit(childOpen(path))
	}
	if os.Getenv("TESSERA_AUDIT_UNPRIVILEGED") == "1" {
		os.Exit(childUnprivileged())
	}
	os.Exit(m.Run())
}

func childOpen(path string) int {
	wait := os.Getenv("TESSERA_AUDIT_WAIT") == "1"
	in := bufio.NewReader(os.Stdin)
	if wait {
		if _, err := in.ReadString('\n'); err != nil {
			return 3
		}
	}
	if try := os.Getenv("TESSERA_AUDIT_TRY"); try != "" {
		fd, err := unix.Open(try, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_ = unix.Close(fd)
			fmt.Fprintf(os.Stderr, "open %s succeeded; the test wants a node whose open fails\n", try)
			return 4
		}
	}
	n, _ := strconv.Atoi(os.Getenv("TESSERA_AUDIT_OPENS"))
	for range max(n, 1) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		_ = unix.Close(fd)
	}
	if wait {
		_, _ = io.Copy(io.Discard, in)
	}
	return 0
}

// childUnprivileged runs the audit as an unprivileged user and prints its
// status: the agent must run on without it.
func childUnprivileged() int {
	a, err := New(Config{Watch: []DeviceNumber{{1, 3}}}, Deps{Allocations: staticAllocations{}, Owners: pidOwners{}})
	if err != nil {
		fmt.Fprintln(os.Stdout, "new:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stdout, "run:", err)
		return 1
	}
	s := a.Status()
	fmt.Fprintf(os.Stdout, "up=%v reason=%s\n", s.Up, s.Reason) // the parent reads the child's stdout
	return 0
}

// requireRoot fails the test in CI (TESSERA_REQUIRE_TOOLS=1, where tests
// run as root) and skips it elsewhere when not root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
		t.Fatal("the eBPF audit tests need root and TESSERA_REQUIRE_TOOLS=1 is set")
	}
	t.Skip("the eBPF audit tests need root (loading BPF programs, cgroups, mknod)")
}

// testCgroups is a private tree in a cgroup2 hierarchy (mounted for the
// test when the host has none), removed at the end.
type testCgroups struct {
	mount, root string
}

func newTestCgroups(t *testing.T) *testCgroups {
	t.Helper()
	mount := findCgroup2()
	if mount == "" {
		mount = t.TempDir()
		if err := unix.Mount("none", mount, "cgroup2", 0, ""); err != nil {
			t.Fatalf("mounting cgroup2 at %s: %v", mount, err)
		}
		t.Cleanup(func() { _ = unix.Unmount(mount, unix.MNT_DETACH) })
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	c := &testCgroups{mount: mount, root: "/tessera-audit-" + hex.EncodeToString(b)}
	t.Cleanup(func() { c.remove(t) })
	return c
}

// dir creates rel below the test root and returns its path inside the
// hierarchy and on disk.
func (c *testCgroups) dir(t *testing.T, rel string) (string, string) {
	t.Helper()
	p := c.root + "/" + strings.Trim(rel, "/")
	if err := os.MkdirAll(filepath.Join(c.mount, p), 0o755); err != nil {
		t.Fatal(err)
	}
	return p, filepath.Join(c.mount, p)
}

// remove deletes the tree depth first (cgroup directories go with rmdir).
func (c *testCgroups) remove(t *testing.T) {
	var dirs []string
	_ = filepath.WalkDir(filepath.Join(c.mount, c.root), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Rmdir(dirs[i]); err != nil {
			t.Logf("removing cgroup %s: %v", dirs[i], err)
		}
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// mknodNull makes a character device with /dev/null's numbers (1:3) under
// another name: it opens without any driver, as a stand-in for a GPU node.
func mknodNull(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stand-in-gpu")
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod %s c 1 3: %v", p, err)
	}
	return p
}

// child starts the test binary in a cgroup v2 directory (CLONE_INTO_CGROUP)
// to open path n times.
func child(t *testing.T, cgroupDir, path string, n int, wait bool, env ...string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TESSERA_AUDIT_OPENS="+strconv.Itoa(n))
	if path != "" {
		cmd.Env = append(cmd.Env, "TESSERA_AUDIT_OPEN="+path)
	}
	if wait {
		cmd.Env = append(cmd.Env, "TESSERA_AUDIT_WAIT=1")
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if cgroupDir != "" {
		f, err := os.Open(cgroupDir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting child in %s: %v", cgroupDir, err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	return cmd, stdin
}

// verdicts collects the audit's verdicts on opens by the test's children.
type verdicts struct {
	mu    sync.Mutex
	byPID map[uint32][]seen
}

type seen struct {
	open    Open
	verdict Verdict
}

func (v *verdicts) observe(o Open, vd Verdict) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.byPID[o.TGID] = append(v.byPID[o.TGID], seen{o, vd})
}

// requireLoaded skips when the kernel cannot load or attach the program on
// hook at all (reason no_hook or no_btf), and fails for any other reason
// (privileges, a missing mount) under TESSERA_REQUIRE_TOOLS=1.
func requireLoaded(t *testing.T, hook Hook, reason string) {
	t.Helper()
	if reason != "no_hook" && reason != "no_btf" && os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
		t.Fatalf("the audit did not start on %s: %s (TESSERA_REQUIRE_TOOLS=1)", hook, reason)
	}
	t.Skipf("this kernel cannot load the audit on %s: %s", hook, reason)
}

// cgroupDevicePrograms lists the IDs of the cgroup/dev programs attached
// to the cgroup directory dir.
func cgroupDevicePrograms(t *testing.T, dir string) map[ebpf.ProgramID]string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		t.Fatalf("querying the cgroup/dev programs of %s: %v", dir, err)
	}
	out := map[ebpf.ProgramID]string{}
	for _, p := range res.Programs {
		name := "?"
		if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
			if info, err := prog.Info(); err == nil {
				name = info.Name
			}
			prog.Close()
		}
		out[p.ID] = name
	}
	return out
}

func (v *verdicts) waitFor(t *testing.T, pid, n int) []seen {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v.mu.Lock()
		got := append([]seen(nil), v.byPID[uint32(pid)]...)
		v.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: %d of %d opens seen within 20s", pid, len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	uidAllowed = "11111111-2222-4333-8444-555555555555"
	uidSneaky  = "66666666-7777-4888-8999-aaaaaaaaaaaa"
	ctrAllowed = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	ctrSneaky  = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
)

type podDirectory map[string]procmap.PodInfo

func (d podDirectory) Pod(uid string) (procmap.PodInfo, bool) { p, ok := d[uid]; return p, ok }

// TestAuditInTheKernel loads the program on every hook this kernel offers
// and opens a stand-in GPU node (1:3 under a temporary name, watched as the
// GPU with minor 3) from processes in cgroups standing for a pod that was
// allocated the GPU, a pod that was not, and a host service, plus a process
// in a cgroup v1 pod directory (the hybrid hosts' layout).
func TestAuditInTheKernel(t *testing.T) {
	requireRoot(t)
	node := mknodNull(t)
	cg := newTestCgroups(t)
	allowedPath, allowedDir := cg.dir(t, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+strings.ReplaceAll(uidAllowed, "-", "_")+".slice/cri-containerd-"+ctrAllowed+".scope")
	sneakyPath, sneakyDir := cg.dir(t, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+strings.ReplaceAll(uidSneaky, "-", "_")+".slice/cri-containerd-"+ctrSneaky+".scope")
	hostPath, hostDir := cg.dir(t, "system.slice/nvidia-persistenced.service")

	kubelet := prt.Start(t,
		prt.Pod{Namespace: "ml", Name: "allowed", Containers: []prt.Container{{Name: "cuda", Devices: []prt.Device{{Resource: "nvidia.com/gpu", IDs: []string{"GPU-stand-in"}}}}}},
		prt.Pod{Namespace: "ml", Name: "sneaky", Containers: []prt.Container{{Name: "main"}}},
	)
	alloc := podresources.New(podresources.Options{Socket: kubelet.Socket()})
	if err := alloc.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	owners, err := procmap.New(procmap.Options{Cgroups: procmap.ProcFS{}, Pods: podDirectory{
		uidAllowed: {Namespace: "ml", Name: "allowed", Containers: map[string]string{ctrAllowed: "cuda"}},
		uidSneaky:  {Namespace: "ml", Name: "sneaky", Containers: map[string]string{ctrSneaky: "main"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	machine := &gpu.Machine{Devices: []gpu.Device{{Index: 0, UUID: "GPU-stand-in", Minor: 3}}}
	// A watched node of a major no driver has: its open fails with ENXIO.
	absentDev := DeviceNumber{4000, 7}
	absent := filepath.Join(t.TempDir(), "absent-driver")
	if err := unix.Mknod(absent, unix.S_IFCHR|0o666, int(unix.Mkdev(absentDev.Major, absentDev.Minor))); err != nil {
		t.Fatalf("mknod %s: %v", absent, err)
	}

	for _, hook := range DefaultHooks {
		t.Run(string(hook), func(t *testing.T) {
			clk := testclock.NewFakeClock(time.Unix(1000, 0))
			rec := record.NewFakeRecorder(100)
			a, err := New(Config{
				Majors: Majors{NVIDIA: 1}, Watch: []DeviceNumber{{1, 3}, absentDev}, Hooks: []Hook{hook},
				MountTracefs: true, Cgroup2Dir: cg.mount, MIGMinorsPath: "/nonexistent",
			}, Deps{Allocations: alloc, Owners: owners, Machine: machine, Recorder: rec, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			vs := &verdicts{byPID: map[uint32][]seen{}}
			a.observe = vs.observe
			var before map[ebpf.ProgramID]string
			if hook == HookCgroupDevice {
				before = cgroupDevicePrograms(t, cg.mount)
			}
			ctx, cancel := context.WithCancel(klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig())))
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				if s := a.Status(); s.Up || s.Reason != "stopped" {
					t.Errorf("status after Run: %+v", s)
				}
				if hook == HookCgroupDevice {
					// Stopped, the audit leaves nothing attached.
					for id, name := range cgroupDevicePrograms(t, cg.mount) {
						if _, ok := before[id]; !ok {
							t.Errorf("cgroup/dev program %d (%s) still attached to the cgroup2 root after Run returned", id, name)
						}
					}
				}
			}()
			deadline := time.Now().Add(20 * time.Second)
			for s := a.Status(); !s.Up; s = a.Status() {
				if s.Reason != "not_started" {
					requireLoaded(t, hook, s.Reason)
				}
				if time.Now().After(deadline) {
					t.Fatal("audit not up within 20s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if got := testutil.ToFloat64(a.metrics.up.WithLabelValues(string(hook), "")); got != 1 {
				t.Errorf("tessera_gpu_audit_up{hook=%q} = %v", hook, got)
			}
			wantAccess := AccessOpened
			if hook == HookCgroupDevice {
				wantAccess = AccessRead
				// Attached once, to the root of the hierarchy, beside
				// whatever else is there.
				ours := 0
				for id, name := range cgroupDevicePrograms(t, cg.mount) {
					if _, ok := before[id]; !ok {
						ours++
						if !strings.HasPrefix(auditProgAuditCgroupDev, name) {
							t.Errorf("new cgroup/dev program %d at the cgroup2 root is %q, want %q", id, name, auditProgAuditCgroupDev)
						}
					}
				}
				if ours != 1 {
					t.Errorf("%d new cgroup/dev programs at the cgroup2 root, want 1", ours)
				}
			}

			check := func(name string, got []seen, wantClass Class, cgroupPath, cgroupDir string) {
				t.Helper()
				for _, s := range got {
					if s.verdict.Class != wantClass || s.open.Device != (DeviceNumber{1, 3}) || s.verdict.Device.Label != "0" || s.open.Access != wantAccess {
						t.Errorf("%s: verdict %s on %s (%q), access %s, want %s on 1:3 (gpu 0), access %s",
							name, s.verdict.Class, s.open.Device, s.verdict.Device.Label, s.open.Access, wantClass, wantAccess)
					}
					if cgroupDir != "" && (s.open.CgroupID != inode(t, cgroupDir) || s.verdict.Owner.CgroupPath != cgroupPath) {
						t.Errorf("%s: cgroup %d %q, want %d %q", name, s.open.CgroupID, s.verdict.Owner.CgroupPath, inode(t, cgroupDir), cgroupPath)
					}
				}
			}
			c1, _ := child(t, allowedDir, node, 1, false)
			check("allocated pod", vs.waitFor(t, c1.Process.Pid, 1), ClassAllowed, allowedPath, allowedDir)
			c2, _ := child(t, sneakyDir, node, 2, false)
			check("unallocated pod", vs.waitFor(t, c2.Process.Pid, 2), ClassUnauthorized, sneakyPath, sneakyDir)
			// The host process first tries a watched node without a driver
			// (ENXIO): the cgroup_device hook sees that attempt, the
			// syscall hooks see successful opens only. Its events are in
			// order, so the attempt is seen before the open of 1:3 or not
			// at all.
			c3, _ := child(t, hostDir, node, 1, false, "TESSERA_AUDIT_TRY="+absent)
			want := 1
			if hook == HookCgroupDevice {
				want = 2
			}
			host := vs.waitFor(t, c3.Process.Pid, want)
			if hook == HookCgroupDevice {
				if len(host) < 2 || host[0].open.Device != absentDev || host[0].open.Access != AccessRead || host[0].verdict.Class != ClassHost {
					t.Fatalf("host process: events %+v, want the failed open attempt of %s first", host, absentDev)
				}
				host = host[1:]
			}
			check("host process", host, ClassHost, hostPath, hostDir)

			if got := testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("ml", "sneaky", "main", "0")); got != 2 {
				t.Errorf(`tessera_gpu_unauthorized_open_total{pod="sneaky"} = %v, want 2`, got)
			}
			if got := testutil.CollectAndCount(a.metrics.unauthorized); got != 1 {
				t.Errorf("%d unauthorized series, want 1 (the allowed open is not flagged)", got)
			}
			if got := testutil.ToFloat64(a.metrics.opens.WithLabelValues("allowed")); got != 1 {
				t.Errorf("allowed opens %v, want 1", got)
			}
			if len(rec.Events) != 1 {
				t.Fatalf("%d Events, want 1 (two opens within the rate limit)", len(rec.Events))
			}
			if ev := <-rec.Events; !strings.Contains(ev, fmt.Sprintf("Warning UnauthorizedGPUAccess Process %d", c2.Process.Pid)) {
				t.Errorf("Event %q", ev)
			}
			clk.Step(DefaultEventInterval)
			c4, _ := child(t, sneakyDir, node, 1, false)
			vs.waitFor(t, c4.Process.Pid, 1)
			if len(rec.Events) != 1 {
				t.Fatalf("%d Events after the rate-limit interval, want 1", len(rec.Events))
			}
			<-rec.Events

			if hook == HookCgroupDevice {
				// mknod of a watched number is an access of its own: made
				// in the unallocated pod it is unauthorized, in the
				// allocated one allowed; opens are not counted.
				dir := t.TempDir()
				m1, _ := child(t, sneakyDir, "", 0, false, "TESSERA_AUDIT_MKNOD="+filepath.Join(dir, "nvidia3"))
				mk := vs.waitFor(t, m1.Process.Pid, 1)
				m2, _ := child(t, allowedDir, "", 0, false, "TESSERA_AUDIT_MKNOD="+filepath.Join(dir, "nvidia0"))
				mk2 := vs.waitFor(t, m2.Process.Pid, 1)
				if s := mk[0]; s.open.Access != AccessMknod || s.verdict.Class != ClassUnauthorized || s.verdict.Owner.Pod != "sneaky" {
					t.Errorf("mknod in the unallocated pod: access %s, verdict %+v", s.open.Access, s.verdict)
				}
				if s := mk2[0]; s.open.Access != AccessMknod || s.verdict.Class != ClassAllowed {
					t.Errorf("mknod in the allocated pod: access %s, verdict %+v", s.open.Access, s.verdict)
				}
				if got := testutil.ToFloat64(a.metrics.unauthorizedMknod.WithLabelValues("ml", "sneaky", "main", "0")); got != 1 {
					t.Errorf(`tessera_gpu_unauthorized_mknod_total{pod="sneaky"} = %v, want 1`, got)
				}
				if got := testutil.ToFloat64(a.metrics.mknods.WithLabelValues("allowed")); got != 1 {
					t.Errorf(`tessera_gpu_audit_mknods_total{class="allowed"} = %v, want 1`, got)
				}
				if got := testutil.ToFloat64(a.metrics.unauthorized.WithLabelValues("ml", "sneaky", "main", "0")); got != 3 {
					t.Errorf(`tessera_gpu_unauthorized_open_total{pod="sneaky"} = %v after the mknod, want 3 (the opens only)`, got)
				}
				if len(rec.Events) != 1 {
					t.Fatalf("%d Events after the mknod, want 1", len(rec.Events))
				}
				if ev := <-rec.Events; !strings.Contains(ev, fmt.Sprintf("Warning UnauthorizedGPUDeviceNode Process %d", m1.Process.Pid)) {
					t.Errorf("mknod Event %q", ev)
				}
			}

			// A process in a cgroup v1 pod directory: the event's cgroup v2
			// ID says nothing, /proc/<pid>/cgroup names the pod.
			v1Dir := filepath.Join("/sys/fs/cgroup/pids", cg.root, "kubepods/besteffort/pod"+uidSneaky, ctrSneaky)
			if err := os.MkdirAll(v1Dir, 0o755); err != nil {
				t.Skipf("no cgroup v1 pids hierarchy to test with: %v", err)
			}
			t.Cleanup(func() {
				for d := v1Dir; strings.HasPrefix(d, filepath.Join("/sys/fs/cgroup/pids", cg.root)); d = filepath.Dir(d) {
					_ = unix.Rmdir(d)
				}
			})
			c5, in := child(t, "", node, 1, true)
			if err := os.WriteFile(filepath.Join(v1Dir, "cgroup.procs"), []byte(strconv.Itoa(c5.Process.Pid)), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(in, "go\n"); err != nil {
				t.Fatal(err)
			}
			v1 := vs.waitFor(t, c5.Process.Pid, 1)
			_ = in.Close()
			if v1[0].verdict.Class != ClassUnauthorized || v1[0].verdict.Owner.Pod != "sneaky" {
				t.Errorf("cgroup v1 pod process: %+v", v1[0].verdict)
			}
		})
	}
}

// TestAuditLosesEventsCountably fills a one-page ring buffer while user
// space is stalled: the kernel drops events and the audit reports them.
func TestAuditLosesEventsCountably(t *testing.T) {
	requireRoot(t)
	node := mknodNull(t)
	clk := testclock.NewFakeClock(time.Unix(1000, 0))
	a, err := New(Config{Watch: []DeviceNumber{{1, 3}}, RingBufferBytes: os.Getpagesize(), MIGMinorsPath: "/nonexistent"},
		Deps{Allocations: staticAllocations{}, Owners: pidOwners{}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	a.observe = func(Open, Verdict) { once.Do(func() { <-release }) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }() //nolint:errcheck // Run returns nil by contract; the status is what is checked
	for deadline := time.Now().Add(20 * time.Second); !a.Status().Up; time.Sleep(5 * time.Millisecond) {
		if s := a.Status(); s.Reason != "not_started" {
			requireLoaded(t, DefaultHooks[0], s.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatal("audit not up within 20s")
		}
	}
	c, _ := child(t, "", node, 2000, false)
	if err := c.Wait(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("child: %v", err)
	}
	close(release)
	for deadline := time.Now().Add(20 * time.Second); testutil.ToFloat64(a.metrics.lost) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no lost events reported within 20s")
		}
		clk.Step(DefaultLostInterval)
	}
	t.Logf("lost events reported: %v", testutil.ToFloat64(a.metrics.lost))
}

// TestAuditWithoutPrivilegesDegrades runs the audit as nobody: it must not
// fail the process, and must say why it is off.
func TestAuditWithoutPrivilegesDegrades(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "tessera-audit-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gpuaudit.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "TESSERA_AUDIT_UNPRIVILEGED=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged audit: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "up=false reason=no_privileges") {
		t.Errorf("unprivileged audit status:\n%s\nwant up=false reason=no_privileges", out)
	}
}
