package gpuaudit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Hook is a kernel attachment point the audit can use.
type Hook string

// The hooks, best first. HookCgroupDevice runs on the kernel's device
// permission checks only; the others run the same check on the exit of
// open-type syscalls (openat, openat2, open, creat, open_by_handle_at) and
// put every syscall on the kernel's slow exit path while attached.
const (
	// HookCgroupDevice is a cgroup/dev program attached with
	// BPF_F_ALLOW_MULTI to the root of the cgroup2 hierarchy (Linux 4.15+;
	// 5.7+ for a link that detaches when the agent exits). It sees device
	// permission checks (attempts to open, and mknod), not successful opens.
	HookCgroupDevice Hook = "cgroup_device"
	// HookTPBTF is the BTF-typed raw tracepoint sys_exit (Linux 5.5+, kernel BTF).
	HookTPBTF Hook = "tp_btf"
	// HookRawTracepoint is the raw tracepoint sys_exit (Linux 4.17+).
	HookRawTracepoint Hook = "raw_tracepoint"
	// HookSyscallTracepoint are the syscalls:sys_exit_open* tracepoints
	// (tracefs must be mounted, or mountable with MountTracefs).
	HookSyscallTracepoint Hook = "syscall_tracepoint"
)

// DefaultHooks is the order hooks are tried in.
var DefaultHooks = []Hook{HookCgroupDevice, HookTPBTF, HookRawTracepoint, HookSyscallTracepoint}

// AnyMinor in a DeviceNumber watches every minor of the major.
const AnyMinor = ^uint32(0)

// DeviceNumber is a character device number; Minor may be AnyMinor.
type DeviceNumber struct {
	Major, Minor uint32
}

func (d DeviceNumber) String() string {
	if d.Minor == AnyMinor {
		return fmt.Sprintf("%d:*", d.Major)
	}
	return fmt.Sprintf("%d:%d", d.Major, d.Minor)
}

// Majors are the NVIDIA driver's character-device majors. NVIDIA is 195
// (/dev/nvidia<N>, nvidiactl, nvidia-modeset); UVM and Caps are assigned at
// module load and read from /proc/devices (ReadMajors). 0 means absent.
type Majors struct {
	NVIDIA, UVM, Caps uint32
}

// NVIDIAMajor is the static major of /dev/nvidia*.
const NVIDIAMajor = 195

// ReadMajors reads the majors of nvidia-uvm and nvidia-caps from a
// /proc/devices file ("Character devices:" section); NVIDIA is always 195.
func ReadMajors(procDevices string) (Majors, error) {
	m := Majors{NVIDIA: NVIDIAMajor}
	data, err := os.ReadFile(procDevices)
	if err != nil {
		return m, fmt.Errorf("reading device majors: %w", err)
	}
	char := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "Character devices:":
			char = true
			continue
		case strings.HasSuffix(line, "devices:"):
			char = false
			continue
		}
		f := strings.Fields(line)
		if !char || len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			continue
		}
		switch f[1] {
		case "nvidia-uvm":
			m.UVM = uint32(n)
		case "nvidia-caps":
			m.Caps = uint32(n)
		}
	}
	return m, nil
}

// Defaults applied by New.
const (
	DefaultRingBufferBytes = 256 << 10
	DefaultEventInterval   = 10 * time.Minute
	DefaultMaxSeries       = 1000
	DefaultLostInterval    = 10 * time.Second
	DefaultTracefsDir      = "/sys/kernel/tracing"
	DefaultCgroup2MountDir = "/run/tessera/cgroup2"
	DefaultMIGMinorsPath   = "/proc/driver/nvidia-caps/mig-minors"
)

// Config configures the audit. The zero value, with Majors set, audits
// every NVIDIA device with the defaults.
type Config struct {
	// Majors classify device numbers (which is a GPU, which a control node).
	Majors Majors
	// Watch lists the device numbers whose opens are recorded; default every
	// minor of each non-zero major in Majors. At most 16 whole majors and
	// 256 single devices.
	Watch []DeviceNumber
	// Hooks are tried in order; default DefaultHooks.
	Hooks []Hook
	// RingBufferBytes is the size of the kernel → user ring buffer, a power
	// of two of at least one page; default 256 KiB. Events that do not fit
	// are counted as lost.
	RingBufferBytes int
	// TracefsDir is where the syscall tracepoints are looked up; when it
	// holds no tracefs and MountTracefs is set, tracefs is mounted there.
	TracefsDir   string
	MountTracefs bool
	// Cgroup2Dir is a cgroup2 mount used to turn an event's cgroup ID into
	// a path (needed for processes that exit before user space reads
	// /proc/<pid>/cgroup) and whose root the cgroup_device hook attaches
	// to; "" finds one in /proc/self/mountinfo (a mount of the hierarchy's
	// root), and without one only /proc/<pid>/cgroup is used and the
	// cgroup_device hook is unavailable unless MountCgroup2 is set.
	Cgroup2Dir string
	// MountCgroup2, when no cgroup2 hierarchy is mounted (cgroup v1 hosts
	// may have none), mounts one at Cgroup2MountDir (default
	// DefaultCgroup2MountDir); it stays mounted after the audit stops.
	MountCgroup2    bool
	Cgroup2MountDir string
	// MIGMinorsPath maps nvidia-caps minors to MIG instances; default
	// DefaultMIGMinorsPath.
	MIGMinorsPath string
	// TrustedNamespaces hold pods allowed to open any NVIDIA device (the
	// agent's own, DCGM's, the GPU operator's).
	TrustedNamespaces []string
	// EventInterval is the least time between two Warning Events about one
	// pod and device; default 10 minutes.
	EventInterval time.Duration
	// MaxSeries bounds the series of tessera_gpu_unauthorized_open_total and
	// tessera_gpu_unauthorized_mknod_total together;
	// default 1000. Opens past it are still counted by class.
	MaxSeries int
	// LostInterval is how often the kernel's lost-event counter is read;
	// default 10 seconds.
	LostInterval time.Duration
}

func (c *Config) complete() error {
	if len(c.Watch) == 0 {
		for _, m := range []uint32{c.Majors.NVIDIA, c.Majors.UVM, c.Majors.Caps} {
			if m != 0 {
				c.Watch = append(c.Watch, DeviceNumber{Major: m, Minor: AnyMinor})
			}
		}
	}
	if len(c.Watch) == 0 {
		return fmt.Errorf("gpu audit config: Watch is empty and Majors names no major (want NVIDIA %d)", NVIDIAMajor)
	}
	whole, single := 0, 0
	for _, d := range c.Watch {
		if d.Minor == AnyMinor {
			whole++
		} else {
			single++
		}
		if d.Major == 0 || d.Major >= 1<<12 || (d.Minor != AnyMinor && d.Minor >= 1<<20) {
			return fmt.Errorf("gpu audit config: Watch %s is not a valid device number (major 1..4095, minor 0..1048575 or any)", d)
		}
	}
	if whole > 16 || single > 256 {
		return fmt.Errorf("gpu audit config: Watch has %d whole majors and %d single devices; at most 16 and 256", whole, single)
	}
	if len(c.Hooks) == 0 {
		c.Hooks = slices.Clone(DefaultHooks)
	}
	for _, h := range c.Hooks {
		if !slices.Contains(DefaultHooks, h) {
			return fmt.Errorf("gpu audit config: unknown hook %q (want %s, %s, %s or %s)", h, HookCgroupDevice, HookTPBTF, HookRawTracepoint, HookSyscallTracepoint)
		}
	}
	if c.RingBufferBytes == 0 {
		c.RingBufferBytes = DefaultRingBufferBytes
	}
	if c.RingBufferBytes < os.Getpagesize() || c.RingBufferBytes&(c.RingBufferBytes-1) != 0 {
		return fmt.Errorf("gpu audit config: RingBufferBytes %d must be a power of two of at least %d", c.RingBufferBytes, os.Getpagesize())
	}
	if c.TracefsDir == "" {
		c.TracefsDir = DefaultTracefsDir
	}
	if c.Cgroup2MountDir == "" {
		c.Cgroup2MountDir = DefaultCgroup2MountDir
	}
	if c.MIGMinorsPath == "" {
		c.MIGMinorsPath = DefaultMIGMinorsPath
	}
	if c.EventInterval <= 0 {
		c.EventInterval = DefaultEventInterval
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = DefaultMaxSeries
	}
	if c.LostInterval <= 0 {
		c.LostInterval = DefaultLostInterval
	}
	return nil
}
