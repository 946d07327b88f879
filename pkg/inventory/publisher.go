package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// Field managers of the publisher's server-side applies.
const (
	// FieldManager owns the GPUNode (metadata and status).
	FieldManager = "tessera-gpu-agent"
	// LabelFieldManager owns the GFD labels on the Node. It is separate
	// from the layout reconciler's manager (which merge-patches
	// nvidia.com/mig.config.state as tessera-gpu-agent): an apply removes
	// exactly the labels its own manager set before and no longer sets,
	// and never a label another manager wrote.
	LabelFieldManager = "tessera-gpu-agent-labels"
)

// Defaults applied by NewPublisher to zero Config fields.
const (
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultMinWriteInterval  = 5 * time.Second
	DefaultResyncInterval    = 5 * time.Second
)

// DeviceSource is the device plugin's view: the machine it serves, its
// options and the resources it advertises, as one consistent snapshot
// (*deviceplugin.Manager). The machine is nil until it is configured.
type DeviceSource interface {
	Advertised() (*gpu.Machine, deviceplugin.Options, []deviceplugin.Resource)
}

// HealthSource reports each GPU's health (*health.Tracker).
type HealthSource interface {
	States() []health.Status
}

// AllocationSource is the PodResources view (*podresources.Cache).
type AllocationSource interface {
	All() []podresources.Holder
}

// NodeClient reads the agent's Node and applies its labels (*kube.Client).
type NodeClient interface {
	NodeListWatch(name string) cache.ListerWatcher
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*v1.Node, error)
}

// GPUNodeClient reads and applies the agent's GPUNode (*client.Client).
type GPUNodeClient interface {
	NodeListWatch(name string) *cache.ListWatch
	Apply(ctx context.Context, obj *v1alpha1.GPUNode, opts client.ApplyOptions) (*v1alpha1.GPUNode, error)
	ApplyStatus(ctx context.Context, obj *v1alpha1.GPUNode, opts client.ApplyOptions) (*v1alpha1.GPUNode, error)
}

// Config configures a Publisher.
type Config struct {
	// NodeName is the agent's node: the GPUNode's name and the labelled Node.
	NodeName string
	Nodes    NodeClient
	// NodeInformer, when set, is the informer on the agent's Node the
	// publisher reads the Node from (kube.NewNodeInformer, shared with the
	// layout reconciler); its owner runs it. Nil: the publisher runs its own
	// on Nodes.NodeListWatch.
	NodeInformer cache.SharedIndexInformer
	GPUNodes     GPUNodeClient
	Devices      DeviceSource
	// Health is optional: without it every GPU counts as healthy.
	Health HealthSource
	// Pods is optional: without it no allocations are published.
	Pods AllocationSource
	// MachineType is the server model for nvidia.com/gpu.machine (the DMI
	// product name, /sys/class/dmi/id/product_name); empty writes "unknown".
	MachineType string
	// DisableLabels leaves the Node's labels alone (GFD runs beside Tessera).
	DisableLabels bool
	// HeartbeatInterval is how often an unchanged status is confirmed
	// (default 30s); the scheduler's staleness age must be longer.
	HeartbeatInterval time.Duration
	// MinWriteInterval spaces writes: changes within it are coalesced into
	// one write (default 5s).
	MinWriteInterval time.Duration
	// ResyncInterval is how often the sources are read for changes that
	// nobody signalled with Notify (default 5s).
	ResyncInterval time.Duration
	Clock          clock.WithTicker
}

// Publisher keeps the agent's GPUNode and the Node's GFD labels equal to
// what the agent observes. Create it with NewPublisher and run it with Run.
//
// Wiring in the agent (pkg/agent):
//
//	pub, err := inventory.NewPublisher(inventory.Config{
//		NodeName: nodeName, Nodes: kubeClient, GPUNodes: gpuNodeClient,
//		Devices: deviceManager, Health: tracker, Pods: podResources,
//		MachineType: dmiProductName,
//	})
//	g.Go(func() error { return pub.Run(ctx) })
//
// and call pub.Notify() where the agent learns of a change sooner than the
// resync would (a health change, a device-plugin reconfiguration).
type Publisher struct {
	cfg     Config
	wake    chan struct{}
	metrics *metrics

	// Owned by the Run goroutine.
	node, gpuNode  cache.Store
	lastAttempt    time.Time
	lastWrite      time.Time // last successful status write
	lastHeartbeat  metav1.Time
	labelsApplied  map[string]string
	labelsNodeUID  types.UID
	labelsRV       string // the Node's resourceVersion after the last label apply
	failures       int
	layout         v1alpha1.Layout
	layoutObserved bool
	// written is the GPUNode as the last write returned it, until the
	// informer has delivered that version.
	written *v1alpha1.GPUNode

	// seen are the newest resourceVersions the informers delivered, so
	// that a sync right after a write compares with the write, not with
	// the older object an informer still holds.
	seen seenVersions

	mu      sync.Mutex
	lastErr error
}

// seenVersions records the newest resourceVersion of each watched kind.
type seenVersions struct {
	mu            sync.Mutex
	node, gpuNode string
}

func (v *seenVersions) observe(kind *string, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if newer(o.GetResourceVersion(), *kind) {
		*kind = o.GetResourceVersion()
	}
}

// delivered reports whether an informer has delivered version rv or later.
func (v *seenVersions) delivered(kind *string, rv string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return !newer(rv, *kind)
}

// newer reports whether resourceVersion a is later than b ("" is earliest).
func newer(a, b string) bool {
	if b == "" {
		return a != ""
	}
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c > 0
}

// NewPublisher checks cfg and applies its defaults.
func NewPublisher(cfg Config) (*Publisher, error) {
	var errs []error
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("field NodeName is required"))
	}
	if cfg.Nodes == nil {
		errs = append(errs, errors.New("field Nodes is required"))
	}
	if cfg.GPUNodes == nil {
		errs = append(errs, errors.New("field GPUNodes is required"))
	}
	if cfg.Devices == nil {
		errs = append(errs, errors.New("field Devices is required"))
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.MinWriteInterval == 0 {
		cfg.MinWriteInterval = DefaultMinWriteInterval
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.MinWriteInterval < 0 || cfg.ResyncInterval < 0 {
		errs = append(errs, fmt.Errorf("MinWriteInterval (%s) and ResyncInterval (%s): must be positive", cfg.MinWriteInterval, cfg.ResyncInterval))
	}
	if cfg.HeartbeatInterval < cfg.MinWriteInterval {
		errs = append(errs, fmt.Errorf("HeartbeatInterval: %s is shorter than MinWriteInterval %s", cfg.HeartbeatInterval, cfg.MinWriteInterval))
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid inventory publisher config: %w", err)
	}
	return &Publisher{cfg: cfg, wake: make(chan struct{}, 1), metrics: newMetrics()}, nil
}

// Notify asks for a prompt comparison of the published inventory with the
// sources; bursts of calls coalesce into at most one write per
// MinWriteInterval. It never blocks.
func (p *Publisher) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// LastError is the last failed write, nil after a success.
func (p *Publisher) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Run publishes until ctx ends; it returns nil then. It watches the Node
// (labels, layout state, UID for the owner reference) and the GPUNode (a
// deletion or a hand edit is put right at the next sync), and retries
// failed writes with backoff, so an unreachable API server only delays it.
func (p *Publisher) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", p.cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	handler := func(seen *string) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { p.seen.observe(seen, o); p.Notify() },
			UpdateFunc: func(_, o any) { p.seen.observe(seen, o); p.Notify() },
			DeleteFunc: func(o any) { p.seen.observe(seen, o); p.Notify() },
		}
	}
	nodeInf, ownNodeInf := p.cfg.NodeInformer, p.cfg.NodeInformer == nil
	if ownNodeInf {
		nodeInf = kube.NewNodeInformer(p.cfg.Nodes.NodeListWatch(p.cfg.NodeName))
	}
	gnInf := cache.NewSharedIndexInformer(p.cfg.GPUNodes.NodeListWatch(p.cfg.NodeName), &v1alpha1.GPUNode{}, 0, cache.Indexers{})
	// The cache keeps only what sync reads (the Node informer's transform
	// does the same for the Node).
	if err := gnInf.SetTransform(leanGPUNode); err != nil {
		return fmt.Errorf("watching gpunode %s: %w", p.cfg.NodeName, err)
	}
	p.node, p.gpuNode = nodeInf.GetStore(), gnInf.GetStore()
	stopNode, err := kube.Watch(ctx, nodeInf, ownNodeInf, handler(&p.seen.node))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watching node %s: %w", p.cfg.NodeName, err)
	}
	defer stopNode()
	stopGPUNode, err := kube.Watch(ctx, gnInf, true, handler(&p.seen.gpuNode))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watching gpunode %s: %w", p.cfg.NodeName, err)
	}
	defer stopGPUNode()
	logger.V(2).Info("Publishing the GPU inventory", "heartbeat", p.cfg.HeartbeatInterval,
		"minWriteInterval", p.cfg.MinWriteInterval, "labels", !p.cfg.DisableLabels)

	resync := p.cfg.Clock.NewTicker(p.cfg.ResyncInterval)
	defer resync.Stop()
	dirty := true
	for {
		wait := p.nextSync(dirty)
		if wait > 0 {
			t := p.cfg.Clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-p.wake:
				t.Stop()
				dirty = true
				continue
			case <-resync.C():
				t.Stop()
				dirty = true
				continue
			case <-t.C():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		dirty = false
		if err := p.sync(ctx); err != nil {
			dirty = true // retried after the backoff nextSync applies
		}
	}
}

// nextSync is how long to wait before the next sync: a change waits out
// MinWriteInterval (longer after failures), an unchanged status its
// heartbeat.
func (p *Publisher) nextSync(dirty bool) time.Duration {
	now := p.cfg.Clock.Now()
	spacing := p.cfg.MinWriteInterval
	for i := 0; i < p.failures && spacing < p.cfg.HeartbeatInterval; i++ {
		spacing *= 2
	}
	spacing = min(spacing, p.cfg.HeartbeatInterval)
	next := p.lastWrite.Add(p.cfg.HeartbeatInterval)
	if dirty || p.failures > 0 {
		next = p.lastAttempt.Add(spacing)
	}
	return next.Sub(now)
}

// sync compares the published inventory with the sources and writes what
// differs, or the heartbeat when it is due.
func (p *Publisher) sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	now := p.cfg.Clock.Now()
	p.lastAttempt = now
	obj, ok, _ := p.node.GetByKey(p.cfg.NodeName)
	if !ok {
		logger.V(2).Info("Node not found; waiting for it before publishing the GPU inventory")
		return nil
	}
	node := obj.(*v1.Node)
	machine, opts, res := p.cfg.Devices.Advertised()
	if machine == nil {
		logger.V(2).Info("The device plugin has no machine yet; waiting before publishing the GPU inventory")
		return nil
	}
	s := Snapshot{Machine: machine, Options: opts, Resources: res, NodeLabels: node.Labels, MachineType: p.cfg.MachineType}
	if p.cfg.Health != nil {
		s.Health = p.cfg.Health.States()
	}
	if p.cfg.Pods != nil {
		s.Holders = p.cfg.Pods.All()
	}
	var live *v1alpha1.GPUNode
	if obj, ok, _ := p.gpuNode.GetByKey(p.cfg.NodeName); ok {
		live = obj.(*v1alpha1.GPUNode)
	}
	if p.written != nil {
		if p.seen.delivered(&p.seen.gpuNode, p.written.ResourceVersion) {
			p.written = nil
		} else {
			live = p.written // the informer lags behind the last write
		}
	}
	errs := []error{p.syncGPUNode(ctx, node, live, BuildStatus(s), now)}
	if !p.cfg.DisableLabels {
		errs = append(errs, p.syncLabels(ctx, node, BuildLabels(s)))
	}
	err := errors.Join(errs...)
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
	if err != nil {
		p.failures++
		logger.Error(err, "Publishing the GPU inventory; retrying", "failures", p.failures)
		return err
	}
	p.failures = 0
	return nil
}

// leanGPUNode drops a GPUNode's managedFields, which the publisher never reads.
func leanGPUNode(obj any) (any, error) {
	if gn, ok := obj.(*v1alpha1.GPUNode); ok {
		gn.ManagedFields = nil
	}
	return obj, nil
}

func ownerRef(node *v1.Node) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}
}

func ownedBy(gn *v1alpha1.GPUNode, node *v1.Node) bool {
	for _, r := range gn.OwnerReferences {
		if r.Kind == "Node" && r.APIVersion == "v1" && r.Name == node.Name && r.UID == node.UID {
			return true
		}
	}
	return false
}

func (p *Publisher) syncGPUNode(ctx context.Context, node *v1.Node, live *v1alpha1.GPUNode, want v1alpha1.GPUNodeStatus, now time.Time) error {
	logger := klog.FromContext(ctx)
	apply := client.ApplyOptions{FieldManager: FieldManager, Force: true}
	obj := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: p.cfg.NodeName, OwnerReferences: []metav1.OwnerReference{ownerRef(node)}}}
	if live == nil || !ownedBy(live, node) {
		applied, err := p.cfg.GPUNodes.Apply(ctx, obj, apply)
		if err != nil {
			p.metrics.errors.WithLabelValues("gpunode").Inc()
			return fmt.Errorf("applying gpunode %s: %w", p.cfg.NodeName, err)
		}
		p.metrics.writes.WithLabelValues("gpunode", "metadata").Inc()
		if live == nil {
			logger.Info("Created GPUNode", "uid", applied.UID)
		}
		live, p.written = applied, applied
	}

	// The layout's last change is when this agent saw it change; across a
	// restart the published time stands while config and state agree.
	if !p.layoutObserved {
		p.layout, p.layoutObserved = live.Status.Layout, true
	}
	if p.layout.Config != want.Layout.Config || p.layout.State != want.Layout.State || p.layout.LastChangeTime == nil {
		p.layout = want.Layout
		p.layout.LastChangeTime = &metav1.Time{Time: now.Truncate(time.Second)}
	}
	want.Layout.LastChangeTime = p.layout.LastChangeTime

	published := live.Status
	published.HeartbeatTime = metav1.Time{}
	changed := !equality.Semantic.DeepEqual(want, published)
	edited := !p.lastWrite.IsZero() && !live.Status.HeartbeatTime.Equal(&p.lastHeartbeat)
	due := p.lastWrite.IsZero() || now.Sub(p.lastWrite) >= p.cfg.HeartbeatInterval
	if !changed && !edited && !due {
		return nil
	}
	reason := "heartbeat"
	if changed || edited {
		reason = "change"
	}
	want.HeartbeatTime = metav1.Time{Time: now.Truncate(time.Second)}
	obj.Status = want
	applied, err := p.cfg.GPUNodes.ApplyStatus(ctx, obj, apply)
	if err != nil {
		p.metrics.errors.WithLabelValues("gpunode").Inc()
		return fmt.Errorf("applying status of gpunode %s: %w", p.cfg.NodeName, err)
	}
	p.metrics.writes.WithLabelValues("gpunode", reason).Inc()
	p.lastWrite, p.lastHeartbeat = now, applied.Status.HeartbeatTime
	p.written = applied
	logger.V(4).Info("Published GPUNode status", "reason", reason)
	return nil
}

// syncLabels applies the GFD labels when they differ from what this
// publisher last applied or from the Node's (a hand edit). The first sync
// of a process always applies, so labels an earlier run wrote and this one
// does not are removed.
func (p *Publisher) syncLabels(ctx context.Context, node *v1.Node, want map[string]string) error {
	if p.labelsApplied != nil && p.labelsNodeUID == node.UID && maps.Equal(p.labelsApplied, want) {
		if !p.seen.delivered(&p.seen.node, p.labelsRV) {
			return nil // the informer has not delivered the apply yet
		}
		current := true
		for k, v := range want {
			if got, ok := node.Labels[k]; !ok || got != v {
				current = false
				break
			}
		}
		if current {
			return nil
		}
	}
	// The UID makes the apply fail instead of creating a Node that was
	// deleted meanwhile.
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": node.Name, "uid": node.UID, "labels": want},
	})
	if err != nil {
		return fmt.Errorf("encoding labels of node %s: %w", node.Name, err)
	}
	force := true
	applied, err := p.cfg.Nodes.PatchNode(ctx, node.Name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: LabelFieldManager, Force: &force})
	if err != nil {
		p.metrics.errors.WithLabelValues("labels").Inc()
		return fmt.Errorf("applying gfd labels to node %s: %w", node.Name, err)
	}
	p.metrics.writes.WithLabelValues("labels", "change").Inc()
	p.labelsApplied, p.labelsNodeUID, p.labelsRV = want, node.UID, applied.ResourceVersion
	klog.FromContext(ctx).V(2).Info("Applied GFD labels", "labels", len(want))
	return nil
}
