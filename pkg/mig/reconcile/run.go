package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// loop is the state of one Run.
type loop struct {
	*Reconciler
	watch    *nodeWatch
	recorder EventRecorder

	started       bool
	lastMIG       string
	lastSharing   string
	sharingStale  bool
	recoverFailed error
}

// Run follows the node's MIG and sharing labels until ctx is done. It first
// recovers an interrupted layout change (unless Recover was called), then, if
// the node's MIG state is pending from a previous agent or the node asks for
// a layout it does not have, reconciles it. Layout changes run one at a time.
func (r *Reconciler) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", r.cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	recorder := r.cfg.Recorder
	l := &loop{Reconciler: r, watch: newNodeWatch(r.cfg.Client, r.cfg.NodeName, r.cfg.NodeInformer), recorder: recorder}
	if !r.recovered {
		if err := r.Recover(ctx); err != nil {
			// Keep serving: the reconcile below replans from what is there.
			logger.Error(err, "Recovering an interrupted MIG layout change")
			l.recoverFailed = err
		}
	}
	stop, err := l.watch.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the cache synced
		}
		return err
	}
	defer stop()

	var files <-chan fsnotify.Event
	if r.cfg.SharingDir != "" {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watching device plugin config directory %s: %w", r.cfg.SharingDir, err)
		}
		defer w.Close()
		if err := w.Add(r.cfg.SharingDir); err != nil {
			return fmt.Errorf("watching device plugin config directory %s: %w", r.cfg.SharingDir, err)
		}
		files = w.Events
	}
	if r.recovery != "" {
		if node, err := l.watch.node(); err == nil {
			recorder.Event(node, v1.EventTypeWarning, ReasonMIGRecovered, truncate(r.recovery))
		}
		r.recovery = ""
	}
	for {
		node, err := l.watch.node()
		switch {
		case apierrors.IsNotFound(err):
			logger.Info("Own node not found; waiting for it")
		case err != nil:
			logger.Error(err, "Reading own node")
		default:
			l.step(ctx, node)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.watch.changed:
		case ev := <-files:
			logger.V(2).Info("Device plugin config directory changed", "file", ev.Name)
			l.sharingStale = true
		}
	}
}

// step reconciles what changed since the last step.
func (l *loop) step(ctx context.Context, node *v1.Node) {
	first := !l.started
	l.started = true

	want := node.Labels[MIGConfigLabel]
	state := node.Labels[MIGStateLabel]
	retry := l.watch.takeRetry(MIGStateLabel)
	switch {
	case l.cfg.Layouts == nil:
		// Without a MIG config file the MIG labels belong to someone else
		// (NVIDIA's mig-manager, say); leave them alone.
	case first:
		l.lastMIG = want
		// A failed layout waits for the operator; anything else (pending
		// from an agent that stopped, success on a node that rebooted and
		// lost its MIG devices, no state yet) is made true now.
		if want != "" && (state != StateFailed || l.recoverFailed != nil) {
			l.reconcileMIG(ctx, node, want)
		}
	case want != l.lastMIG || retry:
		l.lastMIG = want
		if want != "" {
			l.reconcileMIG(ctx, node, want)
		}
	}

	sharing := node.Labels[SharingConfigLabel]
	if first || sharing != l.lastSharing || l.sharingStale || l.watch.takeRetry(SharingStateLabel) {
		l.lastSharing, l.sharingStale = sharing, false
		l.reconcileSharing(ctx, node, sharing)
	}
}

// reconcileSharing applies the device-plugin config the label names.
func (l *loop) reconcileSharing(ctx context.Context, node *v1.Node, label string) {
	logger := klog.FromContext(ctx).WithValues("label", label)
	name, err := l.cfg.Sharing.Apply(ctx, label)
	l.reportSharing(ctx, node, label, name, err)
	if err != nil {
		logger.Error(err, "Device plugin config not applied; still serving the last good one", "serving", displayName(l.cfg.Sharing.Applied()))
	}
}

// reportSharing records a sharing outcome as an Event and the state label.
func (l *loop) reportSharing(ctx context.Context, node *v1.Node, label, name string, err error) {
	state := StateSuccess
	if err != nil {
		state = StateFailed
		l.recorder.Event(node, v1.EventTypeWarning, deviceplugin.ReasonConfigFailed,
			truncate(fmt.Sprintf("%v; serving %q", err, displayName(l.cfg.Sharing.Applied()))))
	} else {
		klog.FromContext(ctx).Info("Device plugin config applied", "config", displayName(name))
		l.recorder.Eventf(node, v1.EventTypeNormal, deviceplugin.ReasonConfigApplied, "device plugin config %q applied", displayName(name))
	}
	if label == "" {
		return // no label, no state to report next to it
	}
	if cur, ok := node.Labels[SharingStateLabel]; ok && cur == state && !l.watch.wroteOther(SharingStateLabel, state) {
		return
	}
	if err := l.watch.setLabel(ctx, SharingStateLabel, state); err != nil {
		klog.FromContext(ctx).Error(err, "Reporting device plugin config state")
	}
}

func displayName(name string) string {
	if name == "" {
		return "built-in default"
	}
	return name
}

// reconcileMIG makes the GPUs' MIG layout the one the label names, or
// reports why not, leaving the state label success or failed.
func (l *loop) reconcileMIG(ctx context.Context, node *v1.Node, want string) {
	logger := klog.FromContext(ctx).WithValues("migConfig", want)
	ctx = klog.NewContext(ctx, logger)
	state := node.Labels[MIGStateLabel]

	var affected []gpu.Device
	var uuids []string
	plan, err := l.cfg.Layouts.Plan(ctx, want, l.machine)
	if err == nil {
		uuids = plan.AffectedUUIDs()
		affected = affectedGPUs(l.machine, uuids)
		if len(uuids) == 0 {
			logger.Info("GPUs already in the MIG layout")
			if state != StateSuccess || l.watch.wroteOther(MIGStateLabel, StateSuccess) {
				l.recorder.Eventf(node, v1.EventTypeNormal, ReasonMIGApplied, "mig config %q applied: every GPU already had its layout", want)
				l.finish(ctx, want, StateSuccess)
			}
			l.cfg.Metrics.outcome(true)
			l.cfg.Metrics.setState(want, StateSuccess)
			return
		}
	}

	l.cfg.Metrics.setState(want, StatePending)
	if serr := l.watch.setLabel(ctx, MIGStateLabel, StatePending); serr != nil {
		logger.Error(serr, "Setting MIG state pending")
		return // ctx ended; the next agent finds pending or the old state
	}
	if err != nil {
		l.fail(ctx, node, want, fmt.Errorf("planning: %w", err))
		return
	}
	l.recorder.Eventf(node, v1.EventTypeNormal, ReasonMIGPending, "mig config %q pending: changing %s", want, describeGPUs(affected))
	logger.Info("Changing MIG layout", "gpus", describeGPUs(affected))
	if err := l.change(ctx, node, want, plan, affected, uuids); err != nil {
		var superseded *supersededError
		switch {
		case ctx.Err() != nil:
			// The agent is stopping; the previous layout is in place (the
			// applier rolls back a cancelled apply) and pending tells the
			// next agent to finish the change.
			logger.Info("MIG layout change interrupted by shutdown; the next start finishes it", "err", err)
		case errors.As(err, &superseded):
			// Nothing was touched; the next step handles the new value.
			logger.Info("MIG layout change superseded before it started", "by", superseded.by)
			l.recorder.Eventf(node, v1.EventTypeNormal, ReasonMIGSuperseded, "mig config %q not applied: %v", want, err)
		default:
			l.fail(ctx, node, want, err)
		}
		return
	}
	l.cfg.Metrics.outcome(true)
	l.cfg.Metrics.setState(want, StateSuccess)
	l.recorder.Eventf(node, v1.EventTypeNormal, ReasonMIGApplied, "mig config %q applied: changed %s", want, describeGPUs(affected))
	logger.Info("MIG layout applied")
	l.finish(ctx, want, StateSuccess)
}

// change frees the affected GPUs, applies the plan and re-advertises.
func (l *loop) change(ctx context.Context, node *v1.Node, want string, plan Plan, affected []gpu.Device, uuids []string) error {
	logger := klog.FromContext(ctx)
	ids := l.deviceIDs(uuids)
	// No new pod gets an affected device while it is freed and changed.
	l.cfg.Devices.Withhold(uuids)
	defer l.cfg.Devices.Withhold(nil)

	start := l.cfg.Clock.Now()
	drainCtx, cancel := context.WithTimeout(ctx, l.cfg.DrainTimeout)
	err := l.drain(drainCtx, node, want, ids)
	cancel()
	l.cfg.Metrics.drained(l.cfg.Clock.Since(start))
	if err != nil {
		return fmt.Errorf("freeing %s: %w", describeGPUs(affected), err)
	}

	start = l.cfg.Clock.Now()
	applyCtx, cancel := context.WithTimeout(ctx, l.cfg.ApplyTimeout)
	m, err := l.cfg.Layouts.Apply(applyCtx, plan)
	cancel()
	l.cfg.Metrics.applied(l.cfg.Clock.Since(start))
	if err != nil {
		err = fmt.Errorf("applying: %w", err)
		// The applier restored the previous layout; advertise whatever is
		// really there should that have gone wrong too.
		if now, derr := l.cfg.Discoverer.Discover(ctx); derr != nil {
			logger.Error(derr, "Rediscovering gpus after a failed MIG layout change")
		} else if !sameLayout(l.machine, now) {
			logger.Info("Layout differs from the previous one after a failed change; re-advertising what is there")
			l.readvertise(ctx, node, now)
		}
		return err
	}
	if m == nil {
		if m, err = l.cfg.Discoverer.Discover(ctx); err != nil {
			return fmt.Errorf("discovering gpus after the change: %w", err)
		}
	}
	l.readvertise(ctx, node, m)
	return nil
}

// readvertise advertises a new machine, reporting the sharing outcome.
func (l *loop) readvertise(ctx context.Context, node *v1.Node, m *gpu.Machine) {
	name, err := l.advertise(ctx, m)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Device plugin config does not fit the new MIG layout")
	}
	l.reportSharing(ctx, node, l.lastSharing, name, err)
}

// advertise makes the device plugin and health tracker follow machine m.
func (r *Reconciler) advertise(ctx context.Context, m *gpu.Machine) (string, error) {
	if r.cfg.Health != nil {
		r.cfg.Health.SetGPUs(deviceplugin.TrackedGPUs(m))
	}
	r.machine = m
	if r.cfg.OnMachine != nil {
		r.cfg.OnMachine(m)
	}
	name, err := r.cfg.Sharing.SetMachine(ctx, m)
	if err != nil {
		return name, fmt.Errorf("advertising the new layout: %w", err)
	}
	return name, nil
}

// fail reports a failed layout change.
func (l *loop) fail(ctx context.Context, node *v1.Node, want string, err error) {
	klog.FromContext(ctx).Error(err, "MIG layout not applied; the previous layout stays")
	l.cfg.Metrics.outcome(false)
	l.cfg.Metrics.setState(want, StateFailed)
	l.recorder.Event(node, v1.EventTypeWarning, ReasonMIGFailed,
		truncate(fmt.Sprintf("mig config %q failed: %v; the previous layout stays", want, err)))
	l.finish(ctx, want, StateFailed)
}

// finish writes the final state. It is written even when ctx has ended (a
// shutting-down agent must not leave pending behind), within a bound.
func (l *loop) finish(ctx context.Context, want, state string) {
	wctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	if err := l.watch.setLabel(wctx, MIGStateLabel, state); err != nil {
		klog.FromContext(ctx).Error(err, "Reporting MIG state", "state", state, "migConfig", want)
	}
}

// affectedGPUs resolves the UUIDs a plan touches (GPU or MIG UUIDs) to the
// machine's GPUs.
func affectedGPUs(m *gpu.Machine, uuids []string) []gpu.Device {
	want := map[string]bool{}
	for _, u := range uuids {
		want[u] = true
	}
	var out []gpu.Device
	for _, d := range m.Devices {
		hit := want[d.UUID]
		for _, md := range d.MIGDevices {
			hit = hit || want[md.UUID]
		}
		if hit {
			out = append(out, d)
		}
	}
	return out
}

// deviceIDs lists the device IDs a pod may hold on what a plan changes:
// the UUIDs it affects (a GPU's, and those of the MIG devices it destroys),
// and every ID the device plugin advertises for them (whole-GPU devices of
// an affected GPU, MIG devices that go, and their shares). MIG devices the
// plan keeps are not listed: their pods keep running.
func (l *loop) deviceIDs(affected []string) []string {
	set := map[string]bool{}
	for _, u := range affected {
		set[u] = true
	}
	ids := slices.Clone(affected)
	for _, r := range l.cfg.Devices.Resources() {
		for _, d := range r.Devices {
			if (d.MIG == nil && set[d.GPUUUID]) || (d.MIG != nil && set[d.UUID]) {
				ids = append(ids, d.ID)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func describeGPUs(ds []gpu.Device) string {
	idx := make([]string, 0, len(ds))
	for _, d := range ds {
		idx = append(idx, fmt.Sprint(d.Index))
	}
	noun := "gpus"
	if len(ds) == 1 {
		noun = "gpu"
	}
	return noun + " " + strings.Join(idx, ",")
}

// sameLayout reports whether two machines have the same MIG modes and devices.
func sameLayout(a, b *gpu.Machine) bool {
	key := func(m *gpu.Machine) []string {
		var out []string
		for _, d := range m.Devices {
			out = append(out, fmt.Sprintf("%d/%s/%v/%v", d.Index, d.UUID, d.MIGEnabled, d.MIGPendingEnabled))
			for _, md := range d.MIGDevices {
				out = append(out, fmt.Sprintf("%d/%s/%s/%s", d.Index, md.UUID, md.Profile, md.Placement))
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}
