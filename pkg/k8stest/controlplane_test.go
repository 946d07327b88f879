package k8stest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	gpuResource  = corev1.ResourceName("nvidia.com/gpu")
	productLabel = "nvidia.com/gpu.product"
)

// TestNodeLabelAndStatusPatchesReachWatch proves the rig: a node created with its
// status keeps it, and label and status-subresource patches arrive on a watch.
func TestNodeLabelAndStatusPatchesReachWatch(t *testing.T) {
	cp := StartForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel() // before cp.Stop in t.Cleanup, so no client request outlives the apiserver
	nodes := cp.Client().CoreV1().Nodes()

	created, err := nodes.Create(ctx, newGPUNode("gpu-node-0", 8), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	if got := gpus(created); got != 8 {
		t.Errorf("created node allocatable %s = %d, want 8", gpuResource, got)
	}
	if len(created.Status.Conditions) != 1 || created.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("created node conditions = %+v, want Ready=True", created.Status.Conditions)
	}

	w, err := nodes.Watch(ctx, metav1.ListOptions{
		FieldSelector:   "metadata.name=" + created.Name,
		ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watching node: %v", err)
	}
	defer w.Stop()

	labelPatch := `{"metadata":{"labels":{"` + productLabel + `":"NVIDIA-H100-80GB-HBM3"}}}`
	if _, err := nodes.Patch(ctx, created.Name, types.StrategicMergePatchType, []byte(labelPatch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching node labels: %v", err)
	}
	got := nextModified(ctx, t, w)
	if got.Labels[productLabel] != "NVIDIA-H100-80GB-HBM3" || gpus(got) != 8 {
		t.Errorf("after label patch: label %q, %d gpus; want NVIDIA-H100-80GB-HBM3, 8", got.Labels[productLabel], gpus(got))
	}

	statusPatch := `{"status":{"allocatable":{"` + string(gpuResource) + `":"7"}}}`
	if _, err := nodes.Patch(ctx, created.Name, types.MergePatchType, []byte(statusPatch), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("patching node status: %v", err)
	}
	got = nextModified(ctx, t, w)
	if got.Labels[productLabel] != "NVIDIA-H100-80GB-HBM3" || gpus(got) != 7 {
		t.Errorf("after status patch: label %q, %d gpus; want NVIDIA-H100-80GB-HBM3, 7", got.Labels[productLabel], gpus(got))
	}
}

func TestStartStopsWhenContextIsCancelled(t *testing.T) {
	skipIfDisabled(t)
	ctx, cancel := context.WithCancel(t.Context())
	cp, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	cancel()
	if err := cp.Stop(); err != nil { // waits for the stop that cancel triggered
		t.Errorf("stopping control plane: %v", err)
	}
	for _, p := range []*process{cp.etcd, cp.apiserver} {
		if p.cmd.ProcessState == nil {
			t.Errorf("%s still running after context cancellation", p.name)
		}
	}
	if _, err := os.Stat(cp.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary data dir %s not removed: %v", cp.DataDir, err)
	}
}

func TestStartWithoutBinaries(t *testing.T) {
	_, err := Start(t.Context(), Options{BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinaryMissing) || !strings.Contains(err.Error(), "hack/build-k8s-bins.sh") {
		t.Fatalf("Start() error = %v, want ErrBinaryMissing with the build hint", err)
	}
}

func TestKubeconfigForRoundTrips(t *testing.T) {
	data, err := clientcmd.Write(*kubeconfigFor("https://127.0.0.1:6443", []byte("ca-pem"), "tok"))
	if err != nil {
		t.Fatalf("writing kubeconfig: %v", err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	if cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "tok" || string(cfg.CAData) != "ca-pem" || cfg.Insecure {
		t.Errorf("loaded config host=%q token=%q ca=%q insecure=%v", cfg.Host, cfg.BearerToken, cfg.CAData, cfg.Insecure)
	}
}

func TestTailLines(t *testing.T) {
	tests := []struct {
		name string
		data string
		n    int
		want string
	}{
		{name: "empty", data: "", n: 3, want: ""},
		{name: "fewer lines than n", data: "a\nb\n", n: 3, want: "a\nb"},
		{name: "exactly n", data: "a\nb\nc", n: 3, want: "a\nb\nc"},
		{name: "more lines than n", data: "a\nb\nc\nd\n", n: 2, want: "c\nd"},
		{name: "trailing blank lines dropped", data: "a\nb\n\n\n", n: 1, want: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tailLines([]byte(tt.data), tt.n); got != tt.want {
				t.Errorf("tailLines(%q, %d) = %q, want %q", tt.data, tt.n, got, tt.want)
			}
		})
	}
}

func newGPUNode(name string, gpuCount int64) *corev1.Node {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("512Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
		gpuResource:           *resource.NewQuantity(gpuCount, resource.DecimalSI),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Capacity:    resources,
			Allocatable: resources.DeepCopy(),
			Conditions: []corev1.NodeCondition{{
				Type:               corev1.NodeReady,
				Status:             corev1.ConditionTrue,
				Reason:             "KubeletReady",
				LastHeartbeatTime:  metav1.Now(),
				LastTransitionTime: metav1.Now(),
			}},
		},
	}
}

func gpus(node *corev1.Node) int64 {
	q := node.Status.Allocatable[gpuResource]
	return q.Value()
}

// nextModified returns the node of the next watch event, which must be Modified.
func nextModified(ctx context.Context, t *testing.T, w watch.Interface) *corev1.Node {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed before the expected event")
		}
		node, isNode := ev.Object.(*corev1.Node)
		if ev.Type != watch.Modified || !isNode {
			t.Fatalf("watch event = %s %T, want MODIFIED *v1.Node", ev.Type, ev.Object)
		}
		return node
	case <-ctx.Done():
		t.Fatalf("waiting for watch event: %v", ctx.Err())
	}
	return nil
}

// TestAPIServerStopAndRestart: while the apiserver is stopped requests
// fail; restarted, it serves the same address, credentials and data.
func TestAPIServerStopAndRestart(t *testing.T) {
	cp := StartForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	nodes := cp.Client().CoreV1().Nodes()
	if _, err := nodes.Create(ctx, newGPUNode("kept", 8), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cp.StopAPIServer(); err != nil {
		t.Fatalf("StopAPIServer: %v", err)
	}
	if err := cp.StopAPIServer(); err == nil {
		t.Error("a second StopAPIServer succeeded")
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	_, err := nodes.Get(short, "kept", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Fatal("a request succeeded while the apiserver was stopped")
	}
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatalf("RestartAPIServer: %v", err)
	}
	if err := cp.RestartAPIServer(ctx); err == nil {
		t.Error("RestartAPIServer of a running apiserver succeeded")
	}
	if n, err := nodes.Get(ctx, "kept", metav1.GetOptions{}); err != nil || gpus(n) != 8 {
		t.Fatalf("after the restart: %v, %v; want the node created before", n, err)
	}
}

// TestReadCertificates: the apiserver's certificate file is accepted only
// when it is whole, as read while the apiserver writes it it may not be.
func TestReadCertificates(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost-ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, content, wantErr string
	}{
		{name: "one certificate", content: string(cert)},
		{name: "a chain", content: string(cert) + string(cert)},
		{name: "empty", content: "", wantErr: "not written yet"},
		{name: "cut in the first certificate", content: string(cert[:len(cert)/2]), wantErr: "not written yet"},
		{name: "cut in the second certificate", content: string(cert) + string(cert[:len(cert)/2]), wantErr: "not written yet"},
		{name: "a key", content: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), wantErr: "want certificates"},
		{name: "not a certificate", content: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})), wantErr: "apiserver certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "apiserver.crt")
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readCertificates(file)
			if tc.wantErr == "" {
				if err != nil || string(got) != tc.content {
					t.Fatalf("readCertificates = %d bytes, %v; want the file", len(got), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), file) {
				t.Fatalf("readCertificates: %v, want an error naming %s and containing %q", err, file, tc.wantErr)
			}
		})
	}
	if _, err := readCertificates(filepath.Join(t.TempDir(), "absent.crt")); err == nil {
		t.Error("readCertificates of an absent file succeeded")
	}
}
