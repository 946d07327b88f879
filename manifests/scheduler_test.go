package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
	"github.com/tessera-gpu/tessera/pkg/scheduler"
)

// TestSchedulerConfigs loads both example KubeSchedulerConfigurations with
// the scheduler's own loader and decodes Tessera's args as the plugin does;
// the ConfigMap in base/ carries the second-scheduler one unchanged.
func TestSchedulerConfigs(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	for _, tc := range []struct{ file, profile string }{
		{"scheduler/second-scheduler.yaml", "tessera-gpu-scheduler"},
		{"scheduler/default-profile.yaml", "default-scheduler"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := options.LoadConfigFromFile(logger, tc.file)
			if err != nil {
				t.Fatalf("loading: %v", err)
			}
			if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName != tc.profile {
				t.Fatalf("profiles %+v, want one named %s", cfg.Profiles, tc.profile)
			}
			found := false
			for _, pc := range cfg.Profiles[0].PluginConfig {
				if pc.Name != scheduler.Name {
					continue
				}
				found = true
				if _, err := scheduler.DecodeArgs(pc.Args); err != nil {
					t.Errorf("Tessera args: %v", err)
				}
			}
			if !found {
				t.Errorf("no pluginConfig for %s", scheduler.Name)
			}
		})
	}
	want, err := os.ReadFile("scheduler/second-scheduler.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	decodeFile(t, "base/gpu-scheduler-config.yaml", cm)
	if cm.Data["config.yaml"] != string(want) {
		t.Errorf("base/gpu-scheduler-config.yaml's config.yaml differs from scheduler/second-scheduler.yaml")
	}
}

// TestSchedulerManifestsApply creates the scheduler's manifests on a real
// kube-apiserver: the RBAC the built-in roles it binds must exist, the
// Deployment and ConfigMap must pass the server's validation.
func TestSchedulerManifestsApply(t *testing.T) {
	cp := k8stest.StartForTest(t)
	ctx := t.Context()
	kc := cp.Client()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tessera-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	created := 0
	for _, f := range []string{"base/gpu-scheduler-rbac.yaml", "base/gpu-scheduler-config.yaml", "base/gpu-scheduler-deployment.yaml"} {
		for _, obj := range decodeAll(t, f) {
			var err error
			switch o := obj.(type) {
			case *corev1.ServiceAccount:
				_, err = kc.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *corev1.ConfigMap:
				_, err = kc.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *appsv1.Deployment:
				_, err = kc.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.ClusterRole:
				_, err = kc.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.ClusterRoleBinding:
				if _, err := kc.RbacV1().ClusterRoles().Get(ctx, o.RoleRef.Name, metav1.GetOptions{}); err != nil {
					t.Errorf("%s binds ClusterRole %s: %v", o.Name, o.RoleRef.Name, err)
				}
				_, err = kc.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.Role:
				_, err = kc.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			case *rbacv1.RoleBinding:
				if o.RoleRef.Kind == "Role" {
					if _, err := kc.RbacV1().Roles(o.Namespace).Get(ctx, o.RoleRef.Name, metav1.GetOptions{}); err != nil {
						t.Errorf("%s binds Role %s/%s: %v", o.Name, o.Namespace, o.RoleRef.Name, err)
					}
				}
				_, err = kc.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			default:
				t.Errorf("%s: unexpected %T", f, obj)
				continue
			}
			if err != nil {
				t.Errorf("%s: creating %T: %v", f, obj, err)
			}
			created++
		}
	}
	if created < 10 {
		t.Errorf("created %d objects, want the scheduler's service account, roles, bindings, config and deployment", created)
	}
	d, err := kc.AppsV1().Deployments("tessera-system").Get(ctx, "tessera-gpu-scheduler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 || !strings.Contains(strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "), "--config=") {
		t.Errorf("deployment: %d replicas, args %v", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
	}
}

func decodeAll(t *testing.T, f string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Clean(f))
	if err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		obj, _, err := decoder.Decode(js, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, obj)
	}
}

func decodeFile(t *testing.T, f string, into runtime.Object) {
	t.Helper()
	objs := decodeAll(t, f)
	if len(objs) != 1 {
		t.Fatalf("%s: %d objects, want 1", f, len(objs))
	}
	if err := scheme.Scheme.Convert(objs[0], into, nil); err != nil {
		t.Fatalf("%s: %v", f, err)
	}
}
