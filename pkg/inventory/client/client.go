// Package client reads and writes GPUNodes (gpu.tessera.dev/v1alpha1): a
// small typed client over client-go's REST client, for the gpu-agent's
// publisher and the scheduler's informer.
//
// It is hand-written rather than a generated clientset for the same reason
// as pkg/kube: a generated clientset pulls in client-go's whole typed
// machinery (applyconfigurations, discovery), which the agent's footprint
// guard (cmd/gpu-agent/deps_test.go) forbids, and four requests do not need
// it. Server-side apply sends the typed object as JSON; the types' omitempty
// and omitzero tags keep unset fields out of the apply configuration, so the
// applier owns exactly what it sets. It must not import k8s.io/kubernetes or
// the packages pkg/kube forbids.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// Scheme knows GPUNode, GPUNodeList and the meta types (Status, WatchEvent).
var Scheme = runtime.NewScheme()

var codecs = serializer.NewCodecFactory(Scheme)

func init() {
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

var parameterCodec = runtime.NewParameterCodec(Scheme)

// Client reads and writes GPUNodes; it is safe for concurrent use.
type Client struct {
	rest *rest.RESTClient
}

// NewForConfig returns a client for the API server cfg points at, with cfg's
// QPS and Burst (client-go's defaults when unset); cfg is not changed.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("creating gpunode client: nil rest config")
	}
	c := rest.CopyConfig(cfg)
	gv := v1alpha1.SchemeGroupVersion
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	c.NegotiatedSerializer = codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("creating gpunode client for %s: %w", cfg.Host, err)
	}
	return &Client{rest: rc}, nil
}

// RESTClient is the underlying REST client, for requests this package does
// not wrap (a Table, for example).
func (c *Client) RESTClient() rest.Interface { return c.rest }

// Get reads a GPUNode.
func (c *Client) Get(ctx context.Context, name string) (*v1alpha1.GPUNode, error) {
	out := &v1alpha1.GPUNode{}
	err := c.rest.Get().Resource(v1alpha1.Resource).Name(name).
		VersionedParams(&metav1.GetOptions{}, parameterCodec).
		Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// List lists GPUNodes.
func (c *Client) List(ctx context.Context, opts metav1.ListOptions) (*v1alpha1.GPUNodeList, error) {
	out := &v1alpha1.GPUNodeList{}
	err := c.rest.Get().Resource(v1alpha1.Resource).
		VersionedParams(&opts, parameterCodec).
		Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Watch watches GPUNodes.
func (c *Client) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Resource(v1alpha1.Resource).
		VersionedParams(&opts, parameterCodec).
		Watch(ctx)
}

// ListWatch lists and watches every GPUNode, for
// cache.NewSharedIndexInformer(lw, &v1alpha1.GPUNode{}, ...).
func (c *Client) ListWatch() *cache.ListWatch {
	return cache.NewListWatchFromClient(c.rest, v1alpha1.Resource, metav1.NamespaceAll, fields.Everything())
}

// NodeListWatch lists and watches the one GPUNode called name (the agent
// watches its own, to restore it when it is deleted or edited).
func (c *Client) NodeListWatch(name string) *cache.ListWatch {
	return cache.NewListWatchFromClient(c.rest, v1alpha1.Resource, metav1.NamespaceAll,
		fields.OneTermEqualSelector("metadata.name", name))
}

// Delete deletes a GPUNode.
func (c *Client) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return c.rest.Delete().Resource(v1alpha1.Resource).Name(name).Body(&opts).Do(ctx).Error()
}

// ApplyOptions are the server-side apply parameters.
type ApplyOptions struct {
	// FieldManager names the applier; required.
	FieldManager string
	// Force takes ownership of fields another manager set (a hand edit).
	Force bool
}

// Apply server-side-applies obj's metadata (labels, annotations, owner
// references, finalizers), creating the GPUNode when it does not exist; its
// status is not sent. obj must carry its name.
func (c *Client) Apply(ctx context.Context, obj *v1alpha1.GPUNode, opts ApplyOptions) (*v1alpha1.GPUNode, error) {
	return c.apply(ctx, obj, "", opts)
}

// ApplyStatus server-side-applies obj's status (nothing else of obj is
// sent); the GPUNode must exist, else the error is NotFound.
func (c *Client) ApplyStatus(ctx context.Context, obj *v1alpha1.GPUNode, opts ApplyOptions) (*v1alpha1.GPUNode, error) {
	return c.apply(ctx, obj, "status", opts)
}

func (c *Client) apply(ctx context.Context, obj *v1alpha1.GPUNode, subresource string, opts ApplyOptions) (*v1alpha1.GPUNode, error) {
	if obj == nil || obj.Name == "" {
		return nil, errors.New("applying gpunode: object has no name")
	}
	if opts.FieldManager == "" {
		return nil, fmt.Errorf("applying gpunode %s: no field manager", obj.Name)
	}
	// An apply configuration names only what the applier owns: the
	// metadata it sets or the status, never the server's bookkeeping.
	cfg := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: obj.Name}}
	cfg.APIVersion, cfg.Kind = v1alpha1.SchemeGroupVersion.String(), v1alpha1.Kind
	if subresource == "" {
		cfg.Labels, cfg.Annotations = obj.Labels, obj.Annotations
		cfg.OwnerReferences, cfg.Finalizers = obj.OwnerReferences, obj.Finalizers
	} else {
		cfg.Status = obj.Status
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding gpunode %s: %w", obj.Name, err)
	}
	force := opts.Force
	req := c.rest.Patch(types.ApplyPatchType).Resource(v1alpha1.Resource).Name(obj.Name).
		VersionedParams(&metav1.PatchOptions{FieldManager: opts.FieldManager, Force: &force}, parameterCodec).
		Body(body)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	out := &v1alpha1.GPUNode{}
	if err := req.Do(ctx).Into(out); err != nil {
		return nil, err
	}
	return out, nil
}
