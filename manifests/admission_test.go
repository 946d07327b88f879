package manifests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/client"
	"github.com/tessera-gpu/tessera/pkg/inventory/inventorytest"
	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

// applyManifests creates every object of the given manifest files on the API
// server, as `kubectl apply -f` would, resolving kinds through discovery.
func applyManifests(t *testing.T, cfg *rest.Config, files ...string) {
	t.Helper()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var objs []*unstructured.Unstructured
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			obj := &unstructured.Unstructured{}
			if err := utilyaml.Unmarshal(doc, &obj.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(obj.Object) != 0 {
				objs = append(objs, obj)
			}
		}
		applyObjects(t, cfg, f, objs)
	}
}

// applyObjects creates objs (read from source) on the API server, resolving
// kinds through discovery; namespaced objects without a namespace go to
// tessera-system.
func applyObjects(t *testing.T, cfg *rest.Config, source string, objs []*unstructured.Unstructured) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		m, err := mapper.RESTMapping(obj.GroupVersionKind().GroupKind(), obj.GroupVersionKind().Version)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", source, obj.GetKind(), obj.GetName(), err)
		}
		ri := dyn.Resource(m.Resource)
		var res dynamic.ResourceInterface = ri
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace("tessera-system")
			}
			res = ri.Namespace(obj.GetNamespace())
		}
		if _, err := res.Create(context.Background(), obj, metav1.CreateOptions{FieldManager: "manifests-test"}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: creating %s %s: %v", source, obj.GetKind(), obj.GetName(), err)
		}
	}
}

// agentCredentials returns a client config for the gpu-agent of node: a
// bound service-account token of a pod scheduled to node, as the kubelet
// would project into the agent's pod (the API server adds the node name to
// the token's user info). With node == "", the token is bound to nothing.
func agentCredentials(t *testing.T, cp *k8stest.ControlPlane, node string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	cs := cp.Client()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if node != "" {
		p, err := cs.CoreV1().Pods("tessera-system").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "gpu-agent-" + node},
			Spec: corev1.PodSpec{
				NodeName:           node,
				ServiceAccountName: "tessera-gpu-agent",
				Containers:         []corev1.Container{{Name: "agent", Image: "tessera/gpu-agent"}},
			},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			p, err = cs.CoreV1().Pods("tessera-system").Get(ctx, "gpu-agent-"+node, metav1.GetOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}
	}
	tok, err := cs.CoreV1().ServiceAccounts("tessera-system").CreateToken(ctx, "tessera-gpu-agent", req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for the gpu-agent of %q: %v", node, err)
	}
	cfg := cp.RESTConfig()
	cfg.BearerToken = tok.Status.Token
	cfg.BearerTokenFile = ""
	return cfg
}

func labelPatch(key, value string) []byte {
	return fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, key, value)
}

func nodeEvent(node, kind, name, host string) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: node + "-", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Name: name, Namespace: map[bool]string{true: "default"}[kind == "Pod"]},
		Reason:         "XID", Message: "test", Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "tessera-gpu-agent", Host: host},
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}
}

// TestAgentLeastPrivilege applies the agent's RBAC and admission policy to a
// real API server and checks, with real bound tokens, that the agent of node
// A may write only node A's labels, node A's GPUNode and Events about node A,
// and that a token without a node is refused everything.
func TestAgentLeastPrivilege(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := context.Background()
	cfg := cp.RESTConfig()
	if err := inventorytest.InstallCRD(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	applyManifests(t, cfg,
		filepath.Join("base", "namespace.yaml"),
		filepath.Join("base", "gpu-agent-rbac.yaml"),
		filepath.Join("base", "gpu-agent-admission.yaml"))
	admin := cp.Client()
	for _, n := range []string{"node-a", "node-b"} {
		_, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   n,
			Labels: map[string]string{"team": "ml", "nvidia.com/foreign": "keep"},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	agentA := kubernetes.NewForConfigOrDie(agentCredentials(t, cp, "node-a"))
	gpuA, err := client.NewForConfig(agentCredentials(t, cp, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	unbound := kubernetes.NewForConfigOrDie(agentCredentials(t, cp, ""))

	patchNode := func(c kubernetes.Interface, node string, patch []byte) error {
		_, err := c.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err
	}
	// The policy is enforced once the API server's policy informer has it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := patchNode(agentA, "node-b", labelPatch("nvidia.com/gpu.product", "probe"))
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			break
		}
		if err == nil {
			// Undo the write the policy did not stop yet, then wait for it.
			if err := patchNode(admin, "node-b", []byte(`{"metadata":{"labels":{"nvidia.com/gpu.product":null}}}`)); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy is not enforced after 30 s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	gpuNode := func(name string) *v1alpha1.GPUNode {
		return &v1alpha1.GPUNode{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "GPUNode"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
		}
	}
	tests := []struct {
		name    string
		do      func() error
		wantErr string // "" = allowed
	}{
		{name: "own node, GFD label", do: func() error {
			return patchNode(agentA, "node-a", labelPatch("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"))
		}},
		{name: "own node, tessera annotation", do: func() error {
			return patchNode(agentA, "node-a", []byte(`{"metadata":{"annotations":{"gpu.tessera.dev/labels":"x"}}}`))
		}},
		{name: "other node's label", do: func() error { return patchNode(agentA, "node-b", labelPatch("nvidia.com/gpu.product", "x")) }, wantErr: "may not change node node-b"},
		{name: "own node, label outside nvidia.com/", do: func() error { return patchNode(agentA, "node-a", labelPatch("team", "infra")) }, wantErr: "only nvidia.com/ and gpu.tessera.dev/ labels"},
		{name: "own node, removing a foreign label", do: func() error {
			return patchNode(agentA, "node-a", []byte(`{"metadata":{"labels":{"team":null}}}`))
		}, wantErr: "only nvidia.com/ and gpu.tessera.dev/ labels"},
		{name: "own node, spec", do: func() error { return patchNode(agentA, "node-a", []byte(`{"spec":{"unschedulable":true}}`)) }, wantErr: "not its spec"},
		{name: "own GPUNode", do: func() error {
			_, err := gpuA.Apply(ctx, gpuNode("node-a"), client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true})
			return err
		}},
		{name: "other GPUNode", do: func() error {
			_, err := gpuA.Apply(ctx, gpuNode("node-b"), client.ApplyOptions{FieldManager: "tessera-gpu-agent", Force: true})
			return err
		}, wantErr: "may write only GPUNode node-a, not node-b"},
		{name: "event about own node", do: func() error {
			_, err := agentA.CoreV1().Events("default").Create(ctx, nodeEvent("node-a", "Node", "node-a", "node-a"), metav1.CreateOptions{})
			return err
		}},
		{name: "event about a pod on own node", do: func() error {
			_, err := agentA.CoreV1().Events("default").Create(ctx, nodeEvent("node-a", "Pod", "train-0", "node-a"), metav1.CreateOptions{})
			return err
		}},
		{name: "event about other node", do: func() error {
			_, err := agentA.CoreV1().Events("default").Create(ctx, nodeEvent("node-a", "Node", "node-b", "node-a"), metav1.CreateOptions{})
			return err
		}, wantErr: "Events only about its node"},
		{name: "event about a pod from another node", do: func() error {
			_, err := agentA.CoreV1().Events("default").Create(ctx, nodeEvent("node-a", "Pod", "train-0", "node-b"), metav1.CreateOptions{})
			return err
		}, wantErr: "Events only about its node"},
		{name: "token without a node", do: func() error { return patchNode(unbound, "node-a", labelPatch("nvidia.com/gpu.product", "x")) }, wantErr: "carry no node name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("allowed, want refused with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("refused with %v, want %q", err, tt.wantErr)
			}
		})
	}
	b, err := admin.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Labels["nvidia.com/gpu.product"]; ok || b.Labels["team"] != "ml" {
		t.Errorf("node-b labels changed by node-a's agent: %v", b.Labels)
	}
}
