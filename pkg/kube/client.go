// Package kube is the gpu-agent's Kubernetes API client: the few requests
// the agent makes (its own Node, label patches, its node's pods, pod
// evictions, Events) over
// client-go's REST client with a scheme of core/v1 and policy/v1 only.
//
// It must not import client-go's generated clientset, informers, listers,
// applyconfigurations or discovery client, nor k8s.io/kubernetes: they link
// every Kubernetes API group into the agent (cmd/gpu-agent's deps test checks
// this). Consumers declare the methods they call as interfaces of their own.
package kube

import (
	"context"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
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
)

// Scheme knows the types the agent reads and writes: core/v1 (Nodes,
// Events, object references for Events), policy/v1 (Evictions) and the
// unversioned meta types (Status, ListOptions).
var Scheme = runtime.NewScheme()

// codecs encodes and decodes the Scheme's types.
var codecs = serializer.NewCodecFactory(Scheme)

func init() {
	utilruntime.Must(v1.AddToScheme(Scheme))
	utilruntime.Must(policyv1.AddToScheme(Scheme))
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

// parameterCodec encodes request options (ListOptions, PatchOptions ...)
// into query parameters.
var parameterCodec = runtime.NewParameterCodec(Scheme)

// Client makes the agent's requests to the core/v1 API; it is safe for
// concurrent use.
type Client struct {
	rest *rest.RESTClient
}

// NewForConfig returns a client for the API server cfg points at. Like
// client-go's clientset it applies cfg's QPS and Burst (client-go's defaults
// when unset) and sets a default user agent; cfg itself is not changed.
func NewForConfig(cfg *rest.Config) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("creating kubernetes client: nil rest config")
	}
	c := rest.CopyConfig(cfg)
	gv := v1.SchemeGroupVersion
	c.GroupVersion = &gv
	c.APIPath = "/api"
	c.NegotiatedSerializer = codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client for %s: %w", cfg.Host, err)
	}
	return &Client{rest: rc}, nil
}

// GetNode reads a Node.
func (c *Client) GetNode(ctx context.Context, name string) (*v1.Node, error) {
	n := &v1.Node{}
	err := c.rest.Get().Resource("nodes").Name(name).
		VersionedParams(&metav1.GetOptions{}, parameterCodec).
		Do(ctx).Into(n)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// ListNodes lists Nodes.
func (c *Client) ListNodes(ctx context.Context, opts metav1.ListOptions) (*v1.NodeList, error) {
	l := &v1.NodeList{}
	err := c.rest.Get().Resource("nodes").
		VersionedParams(&opts, parameterCodec).
		Do(ctx).Into(l)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// WatchNodes watches Nodes.
func (c *Client) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Resource("nodes").
		VersionedParams(&opts, parameterCodec).
		Watch(ctx)
}

// NodeListWatch lists and watches the one Node called name, for
// cache.NewSharedIndexInformer with a *v1.Node example object.
func (c *Client) NodeListWatch(name string) cache.ListerWatcher {
	return cache.NewListWatchFromClient(c.rest, "nodes", metav1.NamespaceAll,
		fields.OneTermEqualSelector("metadata.name", name))
}

// PodListWatch lists and watches the pods bound to Node nodeName, for
// procmap.NewPodIndex (pod UID -> namespace, name, container IDs).
func (c *Client) PodListWatch(nodeName string) cache.ListerWatcher {
	return cache.NewListWatchFromClient(c.rest, "pods", metav1.NamespaceAll,
		fields.OneTermEqualSelector("spec.nodeName", nodeName))
}

// ListNodePods lists the pods bound to Node nodeName, read from the API
// server's storage (not its watch cache: a pod bound a moment ago is there).
// It asks for protobuf, which decodes a node's pods with a third of the
// allocations JSON takes.
func (c *Client) ListNodePods(ctx context.Context, nodeName string) (*v1.PodList, error) {
	l := &v1.PodList{}
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", nodeName).String()}
	err := c.rest.Get().Resource("pods").
		SetHeader("Accept", runtime.ContentTypeProtobuf+", "+runtime.ContentTypeJSON).
		VersionedParams(&opts, parameterCodec).
		Do(ctx).Into(l)
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", nodeName, err)
	}
	return l, nil
}

// PatchNode patches a Node and returns it as the API server stored it (its
// resourceVersion tells the write's own watch event from others).
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*v1.Node, error) {
	n := &v1.Node{}
	err := c.rest.Patch(pt).Resource("nodes").Name(name).
		VersionedParams(&opts, parameterCodec).
		Body(data).
		Do(ctx).Into(n)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// EvictPod asks the API server to evict a pod through the policy/v1
// Eviction API, honouring its PodDisruptionBudgets. It is the request of
// client-go's Pods().EvictV1 without client-go's own retries: a refusal (429
// with Retry-After) comes back at once, for the caller to retry on its own
// schedule and report.
func (c *Client) EvictPod(ctx context.Context, namespace, name string) error {
	return c.rest.Post().Namespace(namespace).Resource("pods").Name(name).SubResource("eviction").
		MaxRetries(0).
		Body(&policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}).
		Do(ctx).Error()
}

// CreateEvent creates an Event in its namespace.
func (c *Client) CreateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error) {
	out := &v1.Event{}
	err := c.rest.Post().Namespace(e.Namespace).Resource("events").
		VersionedParams(&metav1.CreateOptions{}, parameterCodec).
		Body(e).
		Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateEvent replaces an Event.
func (c *Client) UpdateEvent(ctx context.Context, e *v1.Event) (*v1.Event, error) {
	out := &v1.Event{}
	err := c.rest.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).
		VersionedParams(&metav1.UpdateOptions{}, parameterCodec).
		Body(e).
		Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PatchEvent applies a strategic merge patch to an Event (an event series'
// count and last timestamp, as client-go's event recorder writes them).
func (c *Client) PatchEvent(ctx context.Context, e *v1.Event, data []byte) (*v1.Event, error) {
	out := &v1.Event{}
	err := c.rest.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).
		VersionedParams(&metav1.PatchOptions{}, parameterCodec).
		Body(data).
		Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}
