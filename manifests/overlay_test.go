package manifests

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

// kustomizeBuild renders the kustomization in dir with kustomize's own
// library (what `kubectl apply -k` runs).
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

// agentDaemonSet decodes the tessera-gpu-agent DaemonSet of objs.
func agentDaemonSet(t *testing.T, source string, objs []*unstructured.Unstructured) *appsv1.DaemonSet {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "DaemonSet" && o.GetName() == "tessera-gpu-agent" {
			ds := &appsv1.DaemonSet{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, ds, true); err != nil {
				t.Fatalf("%s: DaemonSet tessera-gpu-agent: %v", source, err)
			}
			return ds
		}
	}
	t.Fatalf("%s has no DaemonSet tessera-gpu-agent", source)
	return nil
}

func agentContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	for i, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "gpu-agent" {
			return &ds.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatal("no gpu-agent container")
	return nil
}

// TestGPUAuditOverlay renders manifests/overlays/gpu-audit with kustomize,
// creates every object on a real API server, and checks that the
// DaemonSet the server stored has what docs/gpu-audit.md ("Kernel hooks and
// privileges") says the audit needs: --gpu-audit with the trusted
// namespaces, a privileged container, the host's PID namespace, the host's
// /sys/kernel/tracing and /sys/fs/cgroup (read-only), and, with a bound
// token of the agent, get/list/watch on its node's pods; and that it keeps
// everything the base DaemonSet has.
func TestGPUAuditOverlay(t *testing.T) {
	base := agentDaemonSet(t, "base", kustomizeBuild(t, "base"))
	objs := kustomizeBuild(t, "overlays/gpu-audit")

	cp := k8stest.StartForTest(t)
	ctx := context.Background()
	applyObjects(t, cp.RESTConfig(), "overlays/gpu-audit", objs)
	ds, err := cp.Client().AppsV1().DaemonSets("tessera-system").Get(ctx, "tessera-gpu-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	c := agentContainer(t, ds)

	for _, want := range []string{"--gpu-audit", "--gpu-audit-trusted-namespaces=tessera-system,gpu-operator"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("gpu-agent args %v lack %s", c.Args, want)
		}
	}
	// The agent's own namespace is trusted: its opens are not violations.
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--gpu-audit-trusted-namespaces="); ok && !slices.Contains(strings.Split(v, ","), ds.Namespace) {
			t.Errorf("%s does not trust the agent's namespace %s", a, ds.Namespace)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("gpu-agent securityContext %+v: want privileged (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)", sc)
	}
	if !spec.HostPID {
		t.Error("hostPID is off: the kernel's PIDs are the host's")
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, want := range []struct {
		path     string
		readOnly bool
	}{
		{"/sys/kernel/tracing", false},
		{"/sys/fs/cgroup", true},
	} {
		i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == want.path })
		switch {
		case i < 0:
			t.Errorf("gpu-agent does not mount %s", want.path)
		case hostPaths[c.VolumeMounts[i].Name] != want.path:
			t.Errorf("%s is mounted from volume %s (host path %q), want the host's %s",
				want.path, c.VolumeMounts[i].Name, hostPaths[c.VolumeMounts[i].Name], want.path)
		case c.VolumeMounts[i].ReadOnly != want.readOnly:
			t.Errorf("%s mounted readOnly=%t, want %t", want.path, c.VolumeMounts[i].ReadOnly, want.readOnly)
		}
	}

	// The overlay adds to the base; it loses nothing of it.
	bc := agentContainer(t, base)
	for _, a := range bc.Args {
		if !slices.Contains(c.Args, a) {
			t.Errorf("the overlay drops the base's argument %s", a)
		}
	}
	for _, m := range bc.VolumeMounts {
		if !slices.ContainsFunc(c.VolumeMounts, func(o corev1.VolumeMount) bool { return o.Name == m.Name && o.MountPath == m.MountPath }) {
			t.Errorf("the overlay drops the base's mount %s at %s", m.Name, m.MountPath)
		}
	}
	for _, v := range base.Spec.Template.Spec.Volumes {
		if !slices.ContainsFunc(spec.Volumes, func(o corev1.Volume) bool { return o.Name == v.Name }) {
			t.Errorf("the overlay drops the base's volume %s", v.Name)
		}
	}

	// Its node's pods, as procmap's pod index lists and watches them.
	agent := kubernetes.NewForConfigOrDie(agentCredentials(t, cp, "node-a"))
	byNode := metav1.ListOptions{FieldSelector: "spec.nodeName=node-a"}
	if _, err := agent.CoreV1().Pods(metav1.NamespaceAll).List(ctx, byNode); err != nil {
		t.Errorf("the agent may not list its node's pods: %v", err)
	}
	w, err := agent.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, byNode)
	if err != nil {
		t.Errorf("the agent may not watch its node's pods: %v", err)
	} else {
		w.Stop()
	}
	if _, err := agent.CoreV1().Pods("tessera-system").Get(ctx, "gpu-agent-node-a", metav1.GetOptions{}); err != nil {
		t.Errorf("the agent may not get a pod: %v", err)
	}
}
