package gpuaudit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/podresources"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// Allocations is the kubelet's view of who holds which device, as
// *podresources.Cache provides it.
type Allocations interface {
	All() []podresources.Holder
}

var _ Allocations = (*podresources.Cache)(nil)

// ProcessOwners resolves a process, or a cgroup read from an event, to its
// pod, as *procmap.Map does.
type ProcessOwners interface {
	Owner(pid uint32) (procmap.Owner, error)
	OwnerOf(cg procmap.ProcCgroup) procmap.Owner
}

var _ ProcessOwners = (*procmap.Map)(nil)

// EventRecorder records Kubernetes Events; *kube.Recorder and client-go's
// record.EventRecorder satisfy it.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Deps are the audit's inputs. Allocations and Owners are required.
type Deps struct {
	Allocations Allocations
	Owners      ProcessOwners
	// Machine is the machine model (GPU minors, MIG devices); replace it
	// with SetMachine after a MIG layout change.
	Machine *gpu.Machine
	// Recorder records the Warning Events; nil records none.
	Recorder EventRecorder
	Clock    clock.WithTicker
}

// Access is what the kernel saw of a watched device.
type Access uint32

// AccessOpened is an open that returned a descriptor (the syscall hooks).
// The cgroup_device hook reports the device permission check instead, as
// the kernel's BPF_DEVCG_ACC_* bits: AccessRead and AccessWrite for an open
// about to happen (or an access(2) check), AccessMknod for a mknod.
const (
	AccessOpened Access = 0
	AccessMknod  Access = 1
	AccessRead   Access = 2
	AccessWrite  Access = 4
)

// Mknod says whether the access was the creation of a device node.
func (x Access) Mknod() bool { return x&AccessMknod != 0 }

func (x Access) String() string {
	switch {
	case x == AccessOpened:
		return "opened"
	case x.Mknod():
		return "mknod"
	case x&(AccessRead|AccessWrite) == AccessRead|AccessWrite:
		return "read+write"
	case x&AccessWrite != 0:
		return "write"
	}
	return "read"
}

// Open is one access to a watched device as the kernel saw it: an open
// that succeeded (syscall hooks), or a device permission check (the
// cgroup_device hook: an open attempt, or a mknod).
type Open struct {
	// CgroupID is the opener's cgroup v2 ID (the root's on a cgroup v1
	// host, where /proc/<tgid>/cgroup names the pod).
	CgroupID  uint64
	PID, TGID uint32
	UID       uint32
	Device    DeviceNumber
	Comm      string
	Access    Access
}

// Class is the audit's verdict on an open.
type Class string

// Verdicts, the class label of tessera_gpu_audit_opens_total.
const (
	ClassAllowed      Class = "allowed"
	ClassUnauthorized Class = "unauthorized"
	ClassHost         Class = "host"
	ClassTrusted      Class = "trusted"
	// ClassUnattributed is an open whose owner could not be told: the
	// process was gone and its cgroup unknown, or its pod is not (yet) in
	// the pod directory.
	ClassUnattributed Class = "unattributed"
)

// Verdict is what the audit made of an open.
type Verdict struct {
	Class  Class
	Owner  procmap.Owner
	Device DeviceInfo
	// HostProcess is the recognised host program (process label).
	HostProcess string
}

// Status is whether the audit runs and on which hook, or why not.
type Status struct {
	Up     bool
	Hook   Hook
	Reason string
}

// Auditor runs the audit. Its methods are safe for concurrent use.
type Auditor struct {
	cfg  Config
	deps Deps

	mu      sync.Mutex
	table   *deviceTable
	status  Status
	lastEvt map[string]time.Time // pod/device/action → last Warning Event
	series  map[[5]string]bool   // action, namespace, pod, container, gpu

	cgroups *cgroupPaths
	metrics *metrics

	// observe, when set (tests), sees every verdict.
	observe func(Open, Verdict)
}

// New returns an Auditor for cfg with defaults applied; it does not touch
// the kernel until Run.
func New(cfg Config, deps Deps) (*Auditor, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	if deps.Allocations == nil || deps.Owners == nil {
		return nil, errors.New("gpu audit: Allocations and Owners are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	a := &Auditor{
		cfg:     cfg,
		deps:    deps,
		status:  Status{Reason: "not_started"},
		lastEvt: map[string]time.Time{},
		series:  map[[5]string]bool{},
	}
	a.table = newDeviceTable(cfg.Majors, deps.Machine, readMIGMinors(cfg.MIGMinorsPath))
	a.metrics = newMetrics()
	a.metrics.setStatus(a.status)
	return a, nil
}

// SetMachine replaces the machine model, for example after a MIG layout
// change (new MIG devices, new nvidia-caps minors).
func (a *Auditor) SetMachine(m *gpu.Machine) {
	t := newDeviceTable(a.cfg.Majors, m, readMIGMinors(a.cfg.MIGMinorsPath))
	a.mu.Lock()
	a.table = t
	a.mu.Unlock()
}

// Status reports whether the audit runs.
func (a *Auditor) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func (a *Auditor) setStatus(s Status) {
	a.mu.Lock()
	a.status = s
	a.mu.Unlock()
	a.metrics.setStatus(s)
}

// Register registers the audit's metrics.
func (a *Auditor) Register(reg prometheus.Registerer) error { return a.metrics.register(reg) }

// Run loads and attaches the BPF program on the best hook the kernel
// offers and audits opens until ctx is done. Where the audit cannot run
// (no privileges, no BTF, no hook) it logs why, sets
// tessera_gpu_audit_up{reason} to 0 and returns nil: the agent runs on.
func (a *Auditor) Run(ctx context.Context) (err error) {
	logger := klog.FromContext(ctx).WithName("gpu-audit")
	ctx = klog.NewContext(ctx, logger)
	defer func() {
		if r := recover(); r != nil {
			logger.Error(fmt.Errorf("%v", r), "GPU access audit stopped by a panic; the agent runs on without it")
			a.setStatus(Status{Reason: "internal_error"})
			err = nil
		}
	}()
	cfg := a.cfg
	cfg.Cgroup2Dir = cgroup2Dir(ctx, cfg)
	a.cgroups = newCgroupPaths(ctx, cfg.Cgroup2Dir)
	defer a.cgroups.close()
	p, err := attach(ctx, cfg)
	if err != nil {
		var ae *attachError
		reason := "load_failed"
		if errors.As(err, &ae) {
			reason = ae.reason
		}
		logger.Info("GPU access audit is off: no usable kernel hook", "reason", reason, "err", err)
		a.setStatus(Status{Reason: reason})
		return nil
	}
	defer p.close()
	logger.Info("GPU access audit running", "hook", p.hook, "watch", a.cfg.Watch, "ringBufferBytes", a.cfg.RingBufferBytes)
	a.setStatus(Status{Up: true, Hook: p.hook})
	defer a.setStatus(Status{Reason: "stopped"})

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := a.deps.Clock.NewTicker(a.cfg.LostInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				a.metrics.lostCount.Store(p.lost())
			}
		}
	}()
	go func() {
		<-ctx.Done()
		p.stopReading()
	}()
	err = p.read(func(o Open) { a.handle(ctx, o) })
	wg.Wait()
	a.metrics.lostCount.Store(p.lost())
	if err != nil && ctx.Err() == nil {
		logger.Error(err, "GPU access audit stopped reading events; the agent runs on without it")
		a.setStatus(Status{Reason: "read_failed"})
		<-ctx.Done()
	}
	return nil
}

// handle judges one open (or mknod) and records the verdict.
func (a *Auditor) handle(ctx context.Context, o Open) {
	v := a.judge(o)
	if o.Access.Mknod() {
		a.metrics.mknods.WithLabelValues(string(v.Class)).Inc()
		if v.Class == ClassUnauthorized {
			a.recordViolation(ctx, o, v)
		}
		if a.observe != nil {
			a.observe(o, v)
		}
		return
	}
	a.metrics.opens.WithLabelValues(string(v.Class)).Inc()
	switch v.Class {
	case ClassHost:
		a.metrics.hostOpens.WithLabelValues(v.HostProcess).Inc()
	case ClassUnauthorized:
		a.recordViolation(ctx, o, v)
	}
	if a.observe != nil {
		a.observe(o, v)
	}
}

// hostPrograms are the host programs recognised by name.
var hostPrograms = []string{"nvidia-smi", "nv-hostengine", "nvidia-persistenced", "dcgm-exporter", "dcgmi", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"}

func (a *Auditor) judge(o Open) Verdict {
	a.mu.Lock()
	t := a.table
	a.mu.Unlock()
	v := Verdict{Device: t.lookup(o.Device), Owner: a.owner(o)}
	switch v.Owner.Kind {
	case procmap.KindHost:
		v.Class = ClassHost
		v.HostProcess = "other"
		switch {
		case int(o.TGID) == os.Getpid():
			v.HostProcess = "gpu-agent"
		case slices.Contains(hostPrograms, o.Comm):
			v.HostProcess = o.Comm
		}
		return v
	case procmap.KindPod:
	default:
		v.Class = ClassUnattributed
		return v
	}
	if int(o.TGID) == os.Getpid() || slices.Contains(a.cfg.TrustedNamespaces, v.Owner.Namespace) {
		v.Class = ClassTrusted
		return v
	}
	var mine []podresources.Holder
	for _, h := range a.deps.Allocations.All() {
		if h.Namespace == v.Owner.Namespace && h.Pod == v.Owner.Pod {
			mine = append(mine, h)
		}
	}
	if t.allows(v.Device, t.granted(mine)) {
		v.Class = ClassAllowed
	} else {
		v.Class = ClassUnauthorized
	}
	return v
}

// owner finds who opened: by the event's cgroup ID when it names a pod's
// cgroup v2 directory (exact even when the process has exited), else by
// /proc/<tgid>/cgroup (cgroup v1 hosts), else by the cgroup path alone.
func (a *Auditor) owner(o Open) procmap.Owner {
	path, havePath := a.cgroups.path(o.CgroupID)
	if havePath {
		if co, ok := procmap.ParseCgroupPath(path); ok {
			return a.deps.Owners.OwnerOf(procmap.ProcCgroup{Path: path, Owner: co})
		}
	}
	if ow, err := a.deps.Owners.Owner(o.TGID); err == nil {
		return ow
	}
	if havePath {
		return a.deps.Owners.OwnerOf(procmap.ProcCgroup{Path: path})
	}
	return procmap.Owner{Kind: procmap.KindUnknownPod}
}

// maxEventKeys bounds the Event rate limiter's memory.
const maxEventKeys = 4096

func (a *Auditor) recordViolation(ctx context.Context, o Open, v Verdict) {
	action, counter := "open", a.metrics.unauthorized
	if o.Access.Mknod() {
		action, counter = "mknod", a.metrics.unauthorizedMknod
	}
	key := [5]string{action, v.Owner.Namespace, v.Owner.Pod, v.Owner.Container, v.Device.Label}
	a.mu.Lock()
	newSeries := !a.series[key]
	if newSeries && len(a.series) >= a.cfg.MaxSeries {
		a.mu.Unlock()
		a.metrics.droppedSeries.Inc()
	} else {
		a.series[key] = true
		a.mu.Unlock()
		counter.WithLabelValues(key[1:]...).Inc()
	}

	now := a.deps.Clock.Now()
	evKey := action + "/" + v.Owner.Namespace + "/" + v.Owner.Pod + "/" + v.Device.Label
	a.mu.Lock()
	last, seen := a.lastEvt[evKey]
	due := !seen || now.Sub(last) >= a.cfg.EventInterval
	if due {
		if len(a.lastEvt) >= maxEventKeys {
			for k, t := range a.lastEvt {
				if now.Sub(t) >= a.cfg.EventInterval {
					delete(a.lastEvt, k)
				}
			}
		}
		if len(a.lastEvt) < maxEventKeys {
			a.lastEvt[evKey] = now
		}
	}
	a.mu.Unlock()
	msg := "Unauthorized GPU device open"
	if o.Access.Mknod() {
		msg = "Unauthorized GPU device node created (mknod)"
	}
	klog.FromContext(ctx).Info(msg, "pod", klog.KRef(v.Owner.Namespace, v.Owner.Pod),
		"container", v.Owner.Container, "device", v.Device.Label, "deviceNumber", o.Device, "access", o.Access,
		"pid", o.TGID, "comm", o.Comm, "eventRecorded", due && a.deps.Recorder != nil)
	if !due || a.deps.Recorder == nil {
		return
	}
	what := "GPU " + v.Device.Label
	switch v.Device.Kind {
	case KindControl, KindAdmin:
		what = v.Device.Label
	case KindMIG:
		what = "a MIG instance of GPU " + v.Device.Label
	}
	ref := &v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: v.Owner.Namespace, Name: v.Owner.Pod}
	switch {
	case o.Access.Mknod():
		a.deps.Recorder.Eventf(ref, v1.EventTypeWarning, "UnauthorizedGPUDeviceNode",
			"Process %d (%s) in container %q made a device node of %s (device %s) with mknod, which the kubelet did not allocate to this pod; further ones are counted in tessera_gpu_unauthorized_mknod_total (Events at most every %s)",
			o.TGID, o.Comm, v.Owner.Container, what, o.Device, a.cfg.EventInterval)
	default:
		// The cgroup_device hook sees the permission check before the
		// open: the open itself may still fail (a runtime's device
		// program denying it, an absent driver).
		verb := "opened"
		if o.Access != AccessOpened {
			verb = "tried to open"
		}
		a.deps.Recorder.Eventf(ref, v1.EventTypeWarning, "UnauthorizedGPUAccess",
			"Process %d (%s) in container %q %s %s (device %s), which the kubelet did not allocate to this pod; further opens are counted in tessera_gpu_unauthorized_open_total (Events at most every %s)",
			o.TGID, o.Comm, v.Owner.Container, verb, what, o.Device, a.cfg.EventInterval)
	}
}

// cString turns a NUL-padded comm into a string.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return strings.TrimSpace(string(s))
}
