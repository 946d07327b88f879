//go:build linux && (amd64 || arm64)

package gpuaudit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// attachError is a failure to load or attach on every hook; reason is the
// class reported in tessera_gpu_audit_up.
type attachError struct {
	reason string
	err    error
}

func (e *attachError) Error() string { return e.err.Error() }
func (e *attachError) Unwrap() error { return e.err }

// probe is the loaded program on one hook.
type probe struct {
	hook  Hook
	coll  *ebpf.Collection
	links []io.Closer
	rd    *ringbuf.Reader
}

// programOf names each hook's entry point in bpf/audit.c.
var programOf = map[Hook]string{
	HookCgroupDevice:      auditProgAuditCgroupDev,
	HookTPBTF:             auditProgAuditTpBtf,
	HookRawTracepoint:     auditProgAuditRawTp,
	HookSyscallTracepoint: auditProgAuditSyscallTp,
}

// syscallTracepoints are the syscalls:sys_exit_* tracepoints the syscall
// hook attaches to; openat must exist, the others where the kernel has them.
var syscallTracepoints = []string{"sys_exit_openat", "sys_exit_openat2", "sys_exit_open", "sys_exit_creat", "sys_exit_open_by_handle_at"}

// attach loads the program on the first of cfg.Hooks that loads and
// attaches, and fills the watch maps.
func attach(ctx context.Context, cfg Config) (*probe, error) {
	logger := klog.FromContext(ctx)
	if err := rlimit.RemoveMemlock(); err != nil {
		logger.V(2).Info("Could not raise RLIMIT_MEMLOCK; loading anyway (kernels since 5.11 do not need it)", "err", err)
	}
	var errs []error
	reason := ""
	for _, h := range cfg.Hooks {
		p, err := attachHook(ctx, cfg, h)
		if err == nil {
			return p, nil
		}
		r := classify(err)
		logger.V(1).Info("GPU audit hook unavailable", "hook", h, "reason", r, "err", err)
		errs = append(errs, fmt.Errorf("hook %s: %w", h, err))
		// The most telling reason: missing privileges explain every hook.
		if reason == "" || r == "no_privileges" {
			reason = r
		}
	}
	if reason == "load_failed" || reason == "" {
		reason = "no_hook"
	}
	return nil, &attachError{reason: reason, err: errors.Join(errs...)}
}

func classify(err error) string {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, os.ErrPermission):
		return "no_privileges"
	case errors.Is(err, btf.ErrNotFound), errors.Is(err, btf.ErrNotSupported):
		return "no_btf"
	case errors.Is(err, errNoTracefs):
		return "no_tracefs"
	case errors.Is(err, errNoCgroup2):
		return "no_cgroup2"
	}
	return "load_failed"
}

var (
	errNoTracefs = errors.New("tracefs is not mounted")
	errNoCgroup2 = errors.New("no cgroup2 hierarchy root")
)

func attachHook(ctx context.Context, cfg Config, h Hook) (_ *probe, err error) {
	spec, err := loadAudit()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded bpf object: %w", err)
	}
	keep := programOf[h]
	for name := range spec.Programs {
		if name != keep {
			delete(spec.Programs, name)
		}
	}
	spec.Maps[auditMapEvents].MaxEntries = uint32(cfg.RingBufferBytes)
	var cgroupRoot *os.File
	switch h {
	case HookSyscallTracepoint:
		if err := ensureTracefs(ctx, cfg); err != nil {
			return nil, err
		}
	case HookCgroupDevice:
		if cgroupRoot, err = openCgroup2Root(cfg.Cgroup2Dir); err != nil {
			return nil, err
		}
		defer cgroupRoot.Close()
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("loading the bpf program for %s: %w", h, err)
	}
	p := &probe{hook: h, coll: coll}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := fillWatch(coll, cfg.Watch); err != nil {
		return nil, err
	}
	prog := coll.Programs[keep]
	switch h {
	case HookCgroupDevice:
		l, err := attachCgroupDevice(cgroupRoot, prog)
		if err != nil {
			return nil, fmt.Errorf("attaching cgroup/dev to the cgroup2 root %s: %w", cfg.Cgroup2Dir, err)
		}
		p.links = append(p.links, l)
	case HookTPBTF:
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return nil, fmt.Errorf("attaching tp_btf/sys_exit: %w", err)
		}
		p.links = append(p.links, l)
	case HookRawTracepoint:
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: prog})
		if err != nil {
			return nil, fmt.Errorf("attaching raw_tracepoint/sys_exit: %w", err)
		}
		p.links = append(p.links, l)
	case HookSyscallTracepoint:
		for i, tp := range syscallTracepoints {
			l, err := link.Tracepoint("syscalls", tp, prog, nil)
			if err != nil {
				if i == 0 {
					return nil, fmt.Errorf("attaching tracepoint syscalls/%s: %w", tp, err)
				}
				continue // this architecture or kernel has no such syscall
			}
			p.links = append(p.links, l)
		}
	}
	p.rd, err = ringbuf.NewReader(coll.Maps[auditMapEvents])
	if err != nil {
		return nil, fmt.Errorf("opening the event ring buffer: %w", err)
	}
	return p, nil
}

// openCgroup2Root opens dir, which must be the root of the cgroup2
// hierarchy: a program attached below it (a cgroup namespace's root, a bind
// mount of a sub-cgroup) would miss every process outside that subtree.
func openCgroup2Root(dir string) (*os.File, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: no cgroup2 mount (mount one, or let the audit: MountCgroup2)", errNoCgroup2)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%w: %s is not a cgroup2 mount", errNoCgroup2, dir)
	}
	// Every cgroup but the hierarchy's root has a cgroup.type file.
	if _, err := os.Stat(filepath.Join(dir, "cgroup.type")); err == nil {
		return nil, fmt.Errorf("%w: %s is a cgroup below the hierarchy's root (a cgroup namespace or a bind mount of a sub-cgroup); run the agent in the host's cgroup namespace", errNoCgroup2, dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the cgroup2 root: %w", err)
	}
	return f, nil
}

// attachCgroupDevice attaches prog to the cgroup root so that it runs
// beside every other device program (runc's, crun's) on every cgroup below:
// with a bpf_link where the kernel has them (5.7+; always multi, and
// detached by the kernel if the agent dies), else with BPF_PROG_ATTACH and
// BPF_F_ALLOW_MULTI, never with a flag that would let it replace or
// override another program.
func attachCgroupDevice(root *os.File, prog *ebpf.Program) (io.Closer, error) {
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(root.Fd()), Program: prog, Attach: ebpf.AttachCGroupDevice})
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, link.ErrNotSupported) {
		return nil, err
	}
	opts := link.RawAttachProgramOptions{Target: int(root.Fd()), Program: prog, Attach: ebpf.AttachCGroupDevice, Flags: unix.BPF_F_ALLOW_MULTI}
	if err := link.RawAttachProgram(opts); err != nil {
		return nil, err
	}
	// The detach needs the cgroup: keep a descriptor of our own.
	fd, err := unix.Dup(int(root.Fd()))
	if err != nil {
		_ = link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(root.Fd()), Program: prog, Attach: ebpf.AttachCGroupDevice})
		return nil, fmt.Errorf("keeping the cgroup root open: %w", err)
	}
	return &progAttach{cgroup: os.NewFile(uintptr(fd), root.Name()), prog: prog}, nil
}

// progAttach is a BPF_PROG_ATTACH attachment, detached by Close.
type progAttach struct {
	cgroup *os.File
	prog   *ebpf.Program
}

func (a *progAttach) Close() error {
	defer a.cgroup.Close()
	return link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(a.cgroup.Fd()), Program: a.prog, Attach: ebpf.AttachCGroupDevice})
}

func fillWatch(coll *ebpf.Collection, watch []DeviceNumber) error {
	one := uint8(1)
	for _, d := range watch {
		var err error
		if d.Minor == AnyMinor {
			err = coll.Maps[auditMapWatchedMajors].Put(d.Major, one)
		} else {
			err = coll.Maps[auditMapWatchedDevs].Put(d.Major<<20|d.Minor, one)
		}
		if err != nil {
			return fmt.Errorf("watching device %s: %w", d, err)
		}
	}
	return nil
}

// ensureTracefs makes sure tracefs is where cilium/ebpf looks for it
// (/sys/kernel/tracing or /sys/kernel/debug/tracing).
func ensureTracefs(ctx context.Context, cfg Config) error {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if isTracefs(dir) {
			return nil
		}
	}
	if !cfg.MountTracefs {
		return fmt.Errorf("%w at /sys/kernel/tracing (mount it, or let the audit: MountTracefs)", errNoTracefs)
	}
	if err := unix.Mount("nodev", cfg.TracefsDir, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("%w: mounting tracefs at %s: %w", errNoTracefs, cfg.TracefsDir, err)
	}
	klog.FromContext(ctx).Info("Mounted tracefs for the syscall tracepoints", "dir", cfg.TracefsDir)
	return nil
}

func isTracefs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TRACEFS_MAGIC
}

// read delivers events to fn until stopReading; it returns nil then.
func (p *probe) read(fn func(Open)) error {
	var rec ringbuf.Record
	for {
		if err := p.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading audit events: %w", err)
		}
		var e auditEvent
		if len(rec.RawSample) < binary.Size(e) {
			continue
		}
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &e); err != nil {
			continue
		}
		fn(Open{CgroupID: e.CgroupId, PID: e.Pid, TGID: e.Tgid, UID: e.Uid, Access: Access(e.Access),
			Device: DeviceNumber{Major: e.Major, Minor: e.Minor}, Comm: cString(e.Comm[:])})
	}
}

func (p *probe) stopReading() {
	if p.rd != nil {
		_ = p.rd.Close()
	}
}

// lost sums the per-CPU lost-event counters.
func (p *probe) lost() uint64 {
	var per []uint64
	if err := p.coll.Maps[auditMapLostEvents].Lookup(uint32(0), &per); err != nil {
		return 0
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum
}

func (p *probe) close() {
	p.stopReading()
	// Links first: the program runs until it is detached.
	for _, l := range p.links {
		_ = l.Close()
	}
	if p.coll != nil {
		p.coll.Close()
	}
}

// cgroupPaths turns cgroup v2 IDs into paths below a cgroup2 mount with
// open_by_handle_at (the ID is the kernfs file handle), caching a bounded
// number of answers.
type cgroupPaths struct {
	dir   string
	mount *os.File
	cache map[uint64]string
}

const maxCgroupPaths = 4096

func newCgroupPaths(ctx context.Context, dir string) *cgroupPaths {
	c := &cgroupPaths{cache: map[uint64]string{}}
	if dir == "" {
		dir = findCgroup2()
	}
	if dir == "" {
		klog.FromContext(ctx).V(1).Info("No cgroup2 mount; owners are read from /proc/<pid>/cgroup only")
		return c
	}
	f, err := os.Open(dir)
	if err != nil {
		klog.FromContext(ctx).Info("Cannot open the cgroup2 mount; owners are read from /proc/<pid>/cgroup only", "dir", dir, "err", err)
		return c
	}
	c.dir, c.mount = filepath.Clean(dir), f
	return c
}

// findCgroup2 returns the first mount of the cgroup2 hierarchy's root in
// /proc/self/mountinfo, else the first cgroup2 mount of a sub-cgroup.
func findCgroup2() string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	sub := ""
	for line := range strings.Lines(string(data)) {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f[3] == "/" {
			return f[4]
		}
		if sub == "" {
			sub = f[4]
		}
	}
	return sub
}

// cgroup2Dir is the cgroup2 mount the audit uses: cfg.Cgroup2Dir, else one
// found in /proc/self/mountinfo, else one it mounts when cfg.MountCgroup2
// is set (cgroup v1 hosts), else "".
func cgroup2Dir(ctx context.Context, cfg Config) string {
	if cfg.Cgroup2Dir != "" {
		return cfg.Cgroup2Dir
	}
	if dir := findCgroup2(); dir != "" || !cfg.MountCgroup2 {
		return dir
	}
	logger := klog.FromContext(ctx)
	dir := cfg.Cgroup2MountDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logger.Info("Cannot make a directory to mount cgroup2 on", "dir", dir, "err", err)
		return ""
	}
	if err := unix.Mount("none", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		logger.Info("Cannot mount cgroup2", "dir", dir, "err", err)
		return ""
	}
	logger.Info("Mounted the cgroup2 hierarchy beside cgroup v1", "dir", dir)
	return dir
}

// fileIDKernfs is the kernel's FILEID_KERNFS handle type.
const fileIDKernfs = 0xfe

// path returns the cgroup's path relative to the cgroup2 root ("/" for the
// root); ok is false when it cannot be told.
func (c *cgroupPaths) path(id uint64) (string, bool) {
	if c == nil || c.mount == nil || id == 0 {
		return "", false
	}
	if p, ok := c.cache[id]; ok {
		return p, true
	}
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, id)
	fd, err := unix.OpenByHandleAt(int(c.mount.Fd()), unix.NewFileHandle(fileIDKernfs, b), unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return "", false
	}
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	_ = unix.Close(fd)
	if err != nil {
		return "", false
	}
	rel, ok := strings.CutPrefix(target, c.dir)
	if !ok {
		return "", false
	}
	if rel == "" {
		rel = "/"
	}
	if len(c.cache) >= maxCgroupPaths {
		clear(c.cache)
	}
	c.cache[id] = rel
	return rel, true
}

func (c *cgroupPaths) close() {
	if c != nil && c.mount != nil {
		_ = c.mount.Close()
	}
}
