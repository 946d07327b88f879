package scrapeauth

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

// BinDirEnv names a directory holding a built gpu-scheduler (make test sets
// it to bin/); without it SchedulerBinary builds one.
const BinDirEnv = "TESSERA_BIN_DIR"

// SchedulerBinary returns $TESSERA_BIN_DIR/gpu-scheduler, else a gpu-scheduler
// built with go build into a temporary directory.
func SchedulerBinary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return filepath.Join(dir, "gpu-scheduler")
	}
	bin := filepath.Join(t.TempDir(), "gpu-scheduler")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tessera-gpu/tessera/cmd/gpu-scheduler").CombinedOutput()
	if err != nil {
		t.Fatalf("go build gpu-scheduler: %v\n%s", err, out)
	}
	return bin
}

// CheckRealScheduler runs gpu-scheduler with the KubeSchedulerConfiguration
// of objs (ConfigMap tessera-gpu-scheduler-config) against cp, as the
// scheduler's ServiceAccount (a bound token, as its pod gets) and with the
// ServiceAccount's credentials for the delegated authentication and
// authorization of its secure port, as in the cluster. It then scrapes
// /metrics as the PodMonitor does (https, certificate not verified): with
// readerToken it must answer 200 with kube-scheduler's metrics and Tessera's
// (tessera_scheduler_gpunodes, once a GPUNode exists);
// without a token, and with the token of a ServiceAccount no role lets read
// /metrics, it must refuse.
func CheckRealScheduler(ctx context.Context, t testing.TB, cp *k8stest.ControlPlane, objs []*unstructured.Unstructured, namespace, readerToken string) {
	t.Helper()
	kc := cp.Client()
	dir := t.TempDir()

	cmObj := find(objs, "ConfigMap", schedulerName+"-config")
	if cmObj == nil {
		t.Fatalf("no ConfigMap %s-config", schedulerName)
	}
	var cm corev1.ConfigMap
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cmObj.Object, &cm); err != nil {
		t.Fatalf("ConfigMap %s: %v", cmObj.GetName(), err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("ConfigMap %s config.yaml: %v", cm.Name, err)
	}

	// The scheduler's identity: a token of its ServiceAccount, as the
	// kubelet projects into its pod.
	tr, err := kc.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, schedulerName, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", schedulerName, err)
	}
	admin := cp.RESTConfig()
	kubeconfig := filepath.Join(dir, "gpu-scheduler.kubeconfig")
	kcfg := clientcmdapi.NewConfig()
	kcfg.Clusters["c"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: admin.CAData}
	kcfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kcfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kcfg.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*kcfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	cfg["clientConnection"] = map[string]any{"kubeconfig": kubeconfig}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, data, 0o600); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	logPath := filepath.Join(dir, "gpu-scheduler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(SchedulerBinary(t), "--config="+config, "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(port),
		"--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig, "-v=2")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting gpu-scheduler: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			t.Logf("gpu-scheduler stopped: %v", err)
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Logf("gpu-scheduler killed after 10s: %v", <-exited)
		}
	}
	t.Cleanup(stop)
	logTail := func() string {
		out, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-30):], "\n")
	}

	// The scheduler's serving certificate is self-signed, as in the pod: the
	// PodMonitor does not verify it either.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // what the PodMonitor's tlsConfig does
	}}
	base := "https://127.0.0.1:" + strconv.Itoa(port)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("gpu-scheduler exited: %w", err)
		default:
		}
		code, _, err := get(ctx, client, base+"/healthz", "")
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("gpu-scheduler never became healthy: %v\n%s", err, logTail())
	}

	// A GPUNode makes TesseraGPU set its gauges (tessera_scheduler_gpunodes
	// counts it by state), so that Tessera's series are there to be scraped.
	gn := &unstructured.Unstructured{}
	gn.SetAPIVersion("gpu.tessera.dev/v1alpha1")
	gn.SetKind("GPUNode")
	gn.SetName("scrapeauth-node")
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "gpu.tessera.dev", Version: "v1alpha1", Resource: "gpunodes"}).
		Create(ctx, gn, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating GPUNode %s: %v", gn.GetName(), err)
	}
	const want = `tessera_scheduler_gpunodes{state=`
	var code int
	var body string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		code, body, err = get(ctx, client, base+"/metrics", readerToken)
		if err != nil {
			return false, fmt.Errorf("GET /metrics: %w", err)
		}
		if code != http.StatusOK {
			return false, fmt.Errorf("GET /metrics: HTTP %d: %.300s", code, body)
		}
		return strings.Contains(body, want), nil
	})
	if err != nil {
		var tessera []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "tessera_") {
				tessera = append(tessera, l)
			}
		}
		t.Errorf("GET /metrics of gpu-scheduler with the reader's token: %v; want %s, have:\n%s\n%s", err, want, strings.Join(tessera, "\n"), logTail())
	} else if !strings.Contains(body, "# TYPE scheduler_") {
		t.Errorf("gpu-scheduler's /metrics lacks kube-scheduler's own series:\n%.300s", body)
	}

	other, err := kc.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, unboundName, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", unboundName, err)
	}
	for _, tc := range []struct{ who, token string }{{"no token", ""}, {"an unbound ServiceAccount's token", other.Status.Token}} {
		code, _, err := get(ctx, client, base+"/metrics", tc.token)
		if err != nil {
			t.Errorf("GET /metrics of gpu-scheduler with %s: %v", tc.who, err)
		} else if code != http.StatusUnauthorized && code != http.StatusForbidden {
			t.Errorf("GET /metrics of gpu-scheduler with %s: HTTP %d, want 401 or 403", tc.who, code)
		}
	}
	stop()
}

// get fetches url with token as bearer token ("" for none).
func get(ctx context.Context, client *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("listener address %v is not TCP", l.Addr())
	}
	return addr.Port
}
