package procmap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// ErrNoProcess is returned for a PID that does not exist (any more).
var ErrNoProcess = errors.New("no such process")

// CgroupReader reads a process's /proc/<pid>/cgroup. ProcFS reads the real
// one; simulated machines provide their own (*sim.Machine). An error for a
// process that does not exist wraps ErrNoProcess or fs.ErrNotExist.
type CgroupReader interface {
	ReadCgroup(pid uint32) ([]byte, error)
}

// ProcFS reads /proc/<pid>/cgroup under Root ("/proc" when empty). To see
// the node's processes the reader must share the host's PID namespace
// (hostPID in a pod).
type ProcFS struct{ Root string }

var _ CgroupReader = ProcFS{}

// ReadCgroup returns /proc/<pid>/cgroup; an error wrapping ErrNoProcess when
// the process is gone.
func (p ProcFS) ReadCgroup(pid uint32) ([]byte, error) {
	root := p.Root
	if root == "" {
		root = "/proc"
	}
	data, err := os.ReadFile(filepath.Join(root, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoSuchProcess) {
		return nil, fmt.Errorf("reading cgroup of pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return nil, fmt.Errorf("reading cgroup of pid %d: %w", pid, err)
	}
	return data, nil
}

// PodDirectory names the pods of this node by UID. *PodIndex is one.
type PodDirectory interface {
	Pod(uid string) (PodInfo, bool)
}

// PodInfo is what the directory knows about one pod.
type PodInfo struct {
	Namespace, Name string
	// Containers maps runtime container IDs (without the "containerd://"
	// scheme) to container names, init and ephemeral containers included.
	Containers map[string]string
}

// Kind classifies a process's owner.
type Kind string

// Owner kinds.
const (
	// KindPod is a process in a pod's cgroup whose pod the directory knows.
	KindPod Kind = "pod"
	// KindUnknownPod is a process in a pod's cgroup whose pod the directory
	// does not know (not synced yet, or a pod of another kubelet).
	KindUnknownPod Kind = "unknown_pod"
	// KindHost is a process outside every pod's cgroup.
	KindHost Kind = "host"
)

// Owner is who owns a process.
type Owner struct {
	Kind Kind
	// CgroupPath is the cgroup the owner was read from.
	CgroupPath string
	Cgroup     CgroupOwner
	// Namespace, Pod and Container name the pod's container when Kind is
	// KindPod; Container is empty when the directory does not list the
	// container ID (a sandbox, or a container newer than the directory).
	Namespace, Pod, Container string
}

// Defaults applied by New.
const (
	DefaultTTL        = 10 * time.Second
	DefaultMaxEntries = 16384
)

// Options configures a Map. Cgroups and Pods are required.
type Options struct {
	Cgroups CgroupReader
	Pods    PodDirectory
	// TTL is how long a process's cgroup is trusted before it is read
	// again; default DefaultTTL. Pod names are looked up at every call.
	TTL time.Duration
	// MaxEntries bounds the PID cache; default DefaultMaxEntries.
	MaxEntries int
	Clock      clock.PassiveClock
}

// Map resolves PIDs to owners, caching each PID's cgroup for TTL. It is safe
// for concurrent use.
type Map struct {
	opts Options

	mu      sync.Mutex
	entries map[uint32]entry
}

type entry struct {
	cg   ProcCgroup
	read time.Time
}

// New returns a Map for o with defaults applied.
func New(o Options) (*Map, error) {
	if o.Cgroups == nil || o.Pods == nil {
		return nil, errors.New("procmap options: Cgroups and Pods are required")
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &Map{opts: o, entries: map[uint32]entry{}}, nil
}

// Owner returns who owns pid. An error wrapping ErrNoProcess means the
// process is gone.
func (m *Map) Owner(pid uint32) (Owner, error) {
	cg, err := m.cgroup(pid)
	if err != nil {
		return Owner{}, err
	}
	return m.OwnerOf(cg), nil
}

// OwnerOf names the owner of a parsed cgroup (for callers that read the
// cgroup themselves, such as an event that carries a cgroup path).
func (m *Map) OwnerOf(cg ProcCgroup) Owner {
	o := Owner{Kind: KindHost, CgroupPath: cg.Path, Cgroup: cg.Owner}
	if !cg.Owner.InPod() {
		return o
	}
	p, ok := m.opts.Pods.Pod(cg.Owner.PodUID)
	if !ok {
		o.Kind = KindUnknownPod
		return o
	}
	o.Kind, o.Namespace, o.Pod = KindPod, p.Namespace, p.Name
	if cg.Owner.ContainerID != "" {
		o.Container = p.Containers[cg.Owner.ContainerID]
	}
	return o
}

func (m *Map) cgroup(pid uint32) (ProcCgroup, error) {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	e, ok := m.entries[pid]
	m.mu.Unlock()
	if ok && now.Sub(e.read) < m.opts.TTL {
		return e.cg, nil
	}
	data, err := m.opts.Cgroups.ReadCgroup(pid)
	if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrNoProcess) {
		err = fmt.Errorf("%w: %w", ErrNoProcess, err)
	}
	if err != nil {
		m.mu.Lock()
		delete(m.entries, pid)
		m.mu.Unlock()
		return ProcCgroup{}, err
	}
	cg, ok := ParseProcCgroup(data)
	if !ok {
		return ProcCgroup{}, fmt.Errorf("parsing cgroup of pid %d: no cgroup lines", pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) >= m.opts.MaxEntries {
		m.pruneLocked(now)
	}
	m.entries[pid] = entry{cg: cg, read: now}
	return cg, nil
}

// pruneLocked drops expired entries and, if the cache is still full, half
// of the rest (map order: arbitrary ones), so that a burst of short-lived
// processes cannot grow it without bound.
func (m *Map) pruneLocked(now time.Time) {
	for pid, e := range m.entries {
		if now.Sub(e.read) >= m.opts.TTL {
			delete(m.entries, pid)
		}
	}
	drop := len(m.entries) - m.opts.MaxEntries/2
	for pid := range m.entries {
		if drop <= 0 {
			break
		}
		delete(m.entries, pid)
		drop--
	}
}

// Len returns the number of cached PIDs.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}
