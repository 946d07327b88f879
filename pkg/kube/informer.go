package kube

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// NewNodeInformer returns an informer on the Node(s) lw lists (the agent's
// own: NodeListWatch) whose cache keeps lean copies (LeanNode). The agent
// runs one and shares it between the layout reconciler and the inventory
// publisher: one watch of its Node per agent.
func NewNodeInformer(lw cache.ListerWatcher) cache.SharedIndexInformer {
	inf := cache.NewSharedIndexInformer(lw, &v1.Node{}, 0, cache.Indexers{})
	_ = inf.SetTransform(LeanNode) // fails only on an informer that has started
	return inf
}

// LeanNode is a cache.TransformFunc that keeps of a Node what the agent
// reads: name, UID, resourceVersion and labels. A Node carries its images,
// conditions and managedFields besides: tens of KiB on a busy node.
func LeanNode(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil
	}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels}}, nil
}

// Watch adds handler to inf and waits until inf has delivered its initial
// list to it; inf is run by its owner (or by Watch when own is set, until
// ctx ends or stop is called). stop removes the handler and, when Watch runs
// inf, stops it and waits for it to end. An error means ctx ended first or
// the handler could not be added.
func Watch(ctx context.Context, inf cache.SharedIndexInformer, own bool, handler cache.ResourceEventHandler) (stop func(), err error) {
	reg, err := inf.AddEventHandler(handler)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	if own {
		go func() {
			defer close(done)
			inf.RunWithContext(ctx)
		}()
	} else {
		close(done)
	}
	stop = func() {
		cancel()
		<-done
		_ = inf.RemoveEventHandler(reg) // fails only on an unknown registration
	}
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		stop()
		return nil, ctx.Err()
	}
	return stop, nil
}
