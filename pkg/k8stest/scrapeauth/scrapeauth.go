// Package scrapeauth checks, against a real kube-apiserver, that the
// credentials gpu-scheduler's PodMonitor scrapes with may read its /metrics.
//
// gpu-scheduler is kube-scheduler: its secure port serves /metrics only to a
// caller whose bearer token the API server authenticates (TokenReview) and
// authorizes for get on the non-resource URL /metrics (SubjectAccessReview).
// kube-apiserver's own /metrics is guarded by the same authenticator and the
// same RBAC rule, so a GET of the apiserver's /metrics with the token is the
// request the scheduler would delegate, answered by the same code.
//
// The chart test (charts/) and the manifest test (manifests/) both use it, so
// the Helm and kustomize installs are held to the same checks.
package scrapeauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/klog/v2/ktesting"
	sacontroller "k8s.io/kubernetes/pkg/controller/serviceaccount"
	"k8s.io/kubernetes/pkg/serviceaccount"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

const (
	// PodMonitorName is the name of gpu-scheduler's PodMonitor, in the chart and in manifests/monitoring.
	PodMonitorName = "tessera-gpu-scheduler"
	// schedulerName names gpu-scheduler's Deployment and ServiceAccount.
	schedulerName = "tessera-gpu-scheduler"
	// securePort is kube-scheduler's default --secure-port, where it serves
	// /metrics; the Deployments set no other.
	securePort = 10259
	// unboundName is a ServiceAccount the checks create, which no role lets read /metrics.
	unboundName = "scrapeauth-unbound"
)

// StartTokenController runs kube-controller-manager's token controller
// (k8s.io/kubernetes/pkg/controller/serviceaccount, the code a cluster runs)
// against cp until t ends, so that a Secret of type
// kubernetes.io/service-account-token gets its token as in a cluster: the test
// control plane runs no controller-manager. The tokens are signed with the
// apiserver's service-account key as legacy tokens, which the apiserver
// accepts while the Secret and its ServiceAccount exist.
func StartTokenController(t testing.TB, cp *k8stest.ControlPlane) {
	t.Helper()
	key, err := keyutil.PrivateKeyFromFile(cp.ServiceAccountKeyFile())
	if err != nil {
		t.Fatalf("reading the service-account signing key: %v", err)
	}
	gen, err := serviceaccount.JWTTokenGenerator(serviceaccount.LegacyIssuer, key)
	if err != nil {
		t.Fatalf("token generator: %v", err)
	}
	client := cp.Client()
	factory := informers.NewSharedInformerFactory(client, 0)
	logger := ktesting.NewLogger(t, ktesting.NewConfig())
	ctrl, err := sacontroller.NewTokensController(logger, factory.Core().V1().ServiceAccounts(), factory.Core().V1().Secrets(), client,
		sacontroller.TokensControllerOptions{TokenGenerator: gen, RootCA: cp.RESTConfig().CAData})
	if err != nil {
		t.Fatalf("token controller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	factory.Start(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctrl.Run(ctx, 1)
	}()
	// Registered after the control plane's cleanup, so it runs before the apiserver stops.
	t.Cleanup(func() {
		cancel()
		<-done
		factory.Shutdown()
	})
}

// podMonitor is the part of a monitoring.coreos.com/v1 PodMonitor the checks read.
type podMonitor struct {
	Spec struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port      string `json:"port"`
			Scheme    string `json:"scheme"`
			Path      string `json:"path"`
			TLSConfig *struct {
				InsecureSkipVerify bool `json:"insecureSkipVerify"`
			} `json:"tlsConfig"`
			Authorization *struct {
				Type        string                    `json:"type"`
				Credentials *corev1.SecretKeySelector `json:"credentials"`
			} `json:"authorization"`
			BearerTokenSecret *corev1.SecretKeySelector `json:"bearerTokenSecret"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// MetricsOnly is the one rule the metrics reader's ClusterRole may hold.
var MetricsOnly = []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/metrics"}}}

// CheckSchedulerPodMonitor checks gpu-scheduler's PodMonitor among objs (a
// rendered install, already applied to cp, with StartTokenController running)
// and the credentials it names:
//   - it selects the scheduler Deployment's pods and scrapes their secure port
//     (https, /metrics, the self-signed certificate accepted) with the
//     authorization field's bearer token, not the deprecated bearerTokenSecret;
//   - the token is key "token" of a kubernetes.io/service-account-token Secret
//     in the PodMonitor's namespace that names a ServiceAccount of objs there,
//     bound by one ClusterRoleBinding to a ClusterRole granting exactly get on
//     /metrics, and by nothing else;
//
// then, on the API server:
//   - the token the controller put in the Secret authenticates as that
//     ServiceAccount (TokenReview) and is allowed get on /metrics
//     (SubjectAccessReview), the two calls the scheduler delegates;
//   - a GET of /metrics with it succeeds and a list of the namespace's
//     Secrets is forbidden, while a ServiceAccount without the binding is
//     refused /metrics;
//   - the scheduler's own ServiceAccount may make those two delegated calls
//     and read the client-CA ConfigMap, or it could not check the token.
//
// It returns the reader's token, for CheckRealScheduler.
func CheckSchedulerPodMonitor(ctx context.Context, t testing.TB, cp *k8stest.ControlPlane, objs []*unstructured.Unstructured, namespace string) string {
	t.Helper()
	pmObj := find(objs, "PodMonitor", PodMonitorName)
	if pmObj == nil {
		t.Fatalf("no PodMonitor %s rendered", PodMonitorName)
	}
	if pmObj.GetNamespace() != namespace {
		t.Errorf("PodMonitor %s is in namespace %q, want %q", PodMonitorName, pmObj.GetNamespace(), namespace)
	}
	var pm podMonitor
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(pmObj.Object, &pm); err != nil {
		t.Fatalf("PodMonitor %s: %v", PodMonitorName, err)
	}

	depObj := find(objs, "Deployment", schedulerName)
	if depObj == nil {
		t.Fatalf("no Deployment %s beside its PodMonitor", schedulerName)
	}
	var dep appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(depObj.Object, &dep); err != nil {
		t.Fatalf("Deployment %s: %v", schedulerName, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatalf("PodMonitor %s selector: %v", PodMonitorName, err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("PodMonitor %s selects %q, which the scheduler's pods (%v) do not match", PodMonitorName, sel, dep.Spec.Template.Labels)
	}
	if n := len(pm.Spec.PodMetricsEndpoints); n != 1 {
		t.Fatalf("PodMonitor %s has %d endpoints, want 1", PodMonitorName, n)
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	var port int32
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == ep.Port {
				port = p.ContainerPort
			}
		}
	}
	if port != securePort {
		t.Errorf("PodMonitor %s scrapes port %q, which is container port %d of the scheduler, want its secure port %d", PodMonitorName, ep.Port, port, securePort)
	}
	if ep.Scheme != "https" || ep.Path != "/metrics" {
		t.Errorf("PodMonitor %s scrapes %s://...%s, want https and /metrics", PodMonitorName, ep.Scheme, ep.Path)
	}
	if ep.TLSConfig == nil || !ep.TLSConfig.InsecureSkipVerify {
		t.Errorf("PodMonitor %s tlsConfig %+v: the scheduler's serving certificate is self-signed, insecureSkipVerify is needed", PodMonitorName, ep.TLSConfig)
	}
	if ep.BearerTokenSecret != nil {
		t.Errorf("PodMonitor %s uses bearerTokenSecret, deprecated by prometheus-operator: use authorization", PodMonitorName)
	}
	if ep.Authorization == nil || ep.Authorization.Credentials == nil || ep.Authorization.Credentials.Name == "" {
		t.Fatalf("PodMonitor %s has no authorization credentials: the scheduler refuses anonymous scrapes", PodMonitorName)
	}
	if typ := ep.Authorization.Type; typ != "" && !strings.EqualFold(typ, "Bearer") {
		t.Errorf("PodMonitor %s authorization type %q, want Bearer", PodMonitorName, typ)
	}
	creds := ep.Authorization.Credentials

	secObj := find(objs, "Secret", creds.Name)
	if secObj == nil {
		t.Fatalf("PodMonitor %s names Secret %s, which is not installed", PodMonitorName, creds.Name)
	}
	var sec corev1.Secret
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(secObj.Object, &sec); err != nil {
		t.Fatalf("Secret %s: %v", creds.Name, err)
	}
	if sec.Namespace != namespace {
		t.Errorf("Secret %s is in namespace %q; prometheus-operator reads it from the PodMonitor's, %q", sec.Name, sec.Namespace, namespace)
	}
	if sec.Type != corev1.SecretTypeServiceAccountToken {
		t.Errorf("Secret %s has type %q, want %s", sec.Name, sec.Type, corev1.SecretTypeServiceAccountToken)
	}
	if creds.Key != corev1.ServiceAccountTokenKey {
		t.Errorf("PodMonitor %s reads key %q of Secret %s; the token controller writes %q", PodMonitorName, creds.Key, sec.Name, corev1.ServiceAccountTokenKey)
	}
	saName := sec.Annotations[corev1.ServiceAccountNameKey]
	if find(objs, "ServiceAccount", saName) == nil {
		t.Fatalf("Secret %s names ServiceAccount %q, which is not installed", sec.Name, saName)
	}
	if saName == schedulerName {
		t.Errorf("Secret %s holds the scheduler's own token; a reader of it could schedule pods", sec.Name)
	}
	checkReaderRBAC(t, objs, namespace, saName)

	kc := cp.Client()
	var token string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := kc.CoreV1().Secrets(namespace).Get(ctx, sec.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		token = string(s.Data[creds.Key])
		return token != "", nil
	})
	if err != nil {
		t.Fatalf("Secret %s/%s never got its token from the token controller: %v", namespace, sec.Name, err)
	}

	// What the scheduler's delegating authenticator and authorizer ask.
	tr, err := kc.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	wantUser := "system:serviceaccount:" + namespace + ":" + saName
	if !tr.Status.Authenticated || tr.Status.User.Username != wantUser {
		t.Fatalf("the Secret's token authenticates as %+v (%s), want %s", tr.Status.User, tr.Status.Error, wantUser)
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range tr.Status.User.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := kc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: tr.Status.User.Username, Groups: tr.Status.User.Groups, UID: tr.Status.User.UID, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	if !sar.Status.Allowed {
		t.Errorf("%s may not get /metrics: %s %s", wantUser, sar.Status.Reason, sar.Status.EvaluationError)
	}

	// The same decision on a real request, and nothing more than /metrics.
	reader := clientWithToken(t, cp, token)
	body, err := reader.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		var code int32
		if s := apierrors.APIStatus(nil); errors.As(err, &s) {
			code = s.Status().Code
		}
		t.Errorf("GET /metrics with the Secret's token: HTTP %d: %v", code, err)
	} else if !strings.Contains(string(body), "# TYPE ") {
		t.Errorf("GET /metrics with the Secret's token returned no metrics:\n%.200s", body)
	}
	if _, err := reader.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets with the metrics reader's token: err = %v, want Forbidden", err)
	}

	// Control: a ServiceAccount without the binding is refused /metrics.
	other := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: unboundName, Namespace: namespace}}
	if _, err := kc.CoreV1().ServiceAccounts(namespace).Create(ctx, other, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	otr, err := kc.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, other.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", other.Name, err)
	}
	if _, err := clientWithToken(t, cp, otr.Status.Token).CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx); !apierrors.IsForbidden(err) {
		t.Errorf("GET /metrics as an unbound ServiceAccount: err = %v, want Forbidden", err)
	}

	checkSchedulerDelegation(ctx, t, kc, objs, namespace)
	return token
}

// checkReaderRBAC: saName is bound by exactly one ClusterRoleBinding, to a
// ClusterRole of objs that grants get on /metrics and nothing else.
func checkReaderRBAC(t testing.TB, objs []*unstructured.Unstructured, namespace, saName string) {
	t.Helper()
	want := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: saName, Namespace: namespace}
	var roles []string
	for _, o := range objs {
		var subjects []rbacv1.Subject
		var ref rbacv1.RoleRef
		switch o.GetKind() {
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
				t.Fatalf("ClusterRoleBinding %s: %v", o.GetName(), err)
			}
			subjects, ref = b.Subjects, b.RoleRef
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
				t.Fatalf("RoleBinding %s: %v", o.GetName(), err)
			}
			subjects, ref = b.Subjects, b.RoleRef
		default:
			continue
		}
		for _, s := range subjects {
			if s == want {
				roles = append(roles, fmt.Sprintf("%s %s -> %s %s", o.GetKind(), o.GetName(), ref.Kind, ref.Name))
				if o.GetKind() != "ClusterRoleBinding" || ref.Kind != "ClusterRole" {
					continue
				}
				roleObj := find(objs, "ClusterRole", ref.Name)
				if roleObj == nil {
					t.Errorf("ClusterRoleBinding %s binds ClusterRole %s, which is not installed", o.GetName(), ref.Name)
					continue
				}
				var role rbacv1.ClusterRole
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(roleObj.Object, &role); err != nil {
					t.Fatalf("ClusterRole %s: %v", ref.Name, err)
				}
				if !apiequality.Semantic.DeepEqual(role.Rules, MetricsOnly) || role.AggregationRule != nil {
					t.Errorf("ClusterRole %s grants %+v (aggregation %+v), want exactly %+v", ref.Name, role.Rules, role.AggregationRule, MetricsOnly)
				}
			}
		}
	}
	if len(roles) != 1 || !strings.HasPrefix(roles[0], "ClusterRoleBinding ") {
		t.Errorf("ServiceAccount %s/%s is bound by %v, want one ClusterRoleBinding to the /metrics reader role", namespace, saName, roles)
	}
}

// checkSchedulerDelegation: the scheduler's ServiceAccount may create
// TokenReviews and SubjectAccessReviews and read the client-CA ConfigMap, as
// kube-scheduler's delegated authentication and authorization need.
func checkSchedulerDelegation(ctx context.Context, t testing.TB, kc kubernetes.Interface, objs []*unstructured.Unstructured, namespace string) {
	t.Helper()
	if find(objs, "ServiceAccount", schedulerName) == nil {
		t.Fatalf("no ServiceAccount %s installed beside the PodMonitor", schedulerName)
	}
	user := "system:serviceaccount:" + namespace + ":" + schedulerName
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"},
		{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"},
		{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "extension-apiserver-authentication"},
	} {
		sar, err := kc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups, ResourceAttributes: &ra,
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if !sar.Status.Allowed {
			t.Errorf("%s may not %s %s.%s %s/%s: it could not check the scraper's token", user, ra.Verb, ra.Resource, ra.Group, ra.Namespace, ra.Name)
		}
	}
}

// clientWithToken is a client of cp's apiserver that authenticates with token only.
func clientWithToken(t testing.TB, cp *k8stest.ControlPlane, token string) kubernetes.Interface {
	t.Helper()
	admin := cp.RESTConfig()
	cfg := &rest.Config{Host: admin.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData}}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}
