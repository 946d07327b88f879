package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/kube"
)

// fieldManager names the agent in the Node's managedFields.
const fieldManager = "tessera-gpu-agent"

// stateLabels are the labels the agent writes and the operator may clear to
// ask for a retry.
var stateLabels = []string{MIGStateLabel, SharingStateLabel}

// nodeWatch follows the agent's own Node through an informer and tells the
// operator's writes of a state label from the agent's own: an update that
// changes a state label to a value the agent did not write last, in an
// object version the agent did not write, is the operator asking for a retry
// (see docs/mig-layouts.md, "Retrying").
type nodeWatch struct {
	client   NodeClient
	nodeName string
	// informer is the agent's shared one, nil to run one of its own.
	informer cache.SharedIndexInformer
	store    cache.Store
	changed  chan struct{}

	// mu is held across the agent's own writes so that the informer's
	// handler sees their resourceVersions recorded before their events.
	mu      sync.Mutex
	ours    map[string]bool   // resourceVersions the agent wrote, not yet seen
	written map[string]string // state label -> the value the agent wrote last ("" removed)
	wrote   map[string]bool   // state label -> the agent has written it
	retry   map[string]bool   // state label -> the operator changed it
}

func newNodeWatch(client NodeClient, nodeName string, informer cache.SharedIndexInformer) *nodeWatch {
	return &nodeWatch{
		client:   client,
		nodeName: nodeName,
		informer: informer,
		changed:  make(chan struct{}, 1),
		ours:     map[string]bool{},
		written:  map[string]string{},
		wrote:    map[string]bool{},
		retry:    map[string]bool{},
	}
}

// start follows the Node until ctx is done or stop is called, and waits for
// the informer to have delivered it. stop removes the watch's handler (and
// ends the informer when the watch runs its own).
func (w *nodeWatch) start(ctx context.Context) (stop func(), err error) {
	inf, own := w.informer, w.informer == nil
	if own {
		inf = kube.NewNodeInformer(w.client.NodeListWatch(w.nodeName))
	}
	w.store = inf.GetStore()
	stop, err = kube.Watch(ctx, inf, own, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.poke() },
		UpdateFunc: w.update,
	})
	if err != nil {
		return nil, fmt.Errorf("watching node %s: %w", w.nodeName, err)
	}
	return stop, nil
}

func (w *nodeWatch) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *nodeWatch) update(oldObj, newObj any) {
	defer w.poke()
	oldNode, ok1 := oldObj.(*v1.Node)
	newNode, ok2 := newObj.(*v1.Node)
	if !ok1 || !ok2 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ours[newNode.ResourceVersion] {
		delete(w.ours, newNode.ResourceVersion)
		return
	}
	for _, key := range stateLabels {
		before, hadBefore := oldNode.Labels[key]
		after, hasAfter := newNode.Labels[key]
		if before == after && hadBefore == hasAfter {
			continue
		}
		if w.wrote[key] && after == w.written[key] {
			continue // the agent's own value, seen through a merged relist
		}
		w.retry[key] = true
	}
}

// takeRetry reports and clears an operator's retry request for a state label.
func (w *nodeWatch) takeRetry(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.retry[key]
	delete(w.retry, key)
	return r
}

// wroteOther reports whether the agent last wrote a state label value other
// than value: the cached Node may not show that write yet.
func (w *nodeWatch) wroteOther(key, value string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wrote[key] && w.written[key] != value
}

// node returns the cached Node, or a NotFound error.
func (w *nodeWatch) node() (*v1.Node, error) {
	obj, ok, err := w.store.GetByKey(w.nodeName)
	if err != nil {
		return nil, fmt.Errorf("reading node %s from the cache: %w", w.nodeName, err)
	}
	n, isNode := obj.(*v1.Node)
	if !ok || !isNode {
		return nil, apierrors.NewNotFound(v1.Resource("nodes"), w.nodeName)
	}
	return n, nil
}

// setLabel sets (or, for "", removes) a label on the Node, retrying API
// errors with backoff until it succeeds or ctx ends: a state label must not
// be left behind.
func (w *nodeWatch) setLabel(ctx context.Context, key, value string) error {
	var v any = value
	if value == "" {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	if err != nil {
		return fmt.Errorf("encoding label patch: %w", err)
	}
	backoff := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 10 * time.Second}
	var lastErr error
	err = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		lastErr = w.patch(ctx, key, value, patch)
		if lastErr != nil {
			klog.FromContext(ctx).Error(lastErr, "Setting node label; retrying", "label", key, "value", value)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("setting label %s=%q on node %s: %w (last error: %w)", key, value, w.nodeName, err, lastErr)
	}
	return nil
}

func (w *nodeWatch) patch(ctx context.Context, key, value string, patch []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.client.PatchNode(ctx, w.nodeName, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil {
		return err
	}
	if len(w.ours) > 64 { // versions never delivered (a relist skipped them)
		clear(w.ours)
	}
	w.ours[n.ResourceVersion] = true
	w.written[key], w.wrote[key] = value, true
	return nil
}
