// Package k8stest starts a real etcd and kube-apiserver on 127.0.0.1 so that
// tests (and hack/local-up.sh) talk to genuine Kubernetes API behaviour instead
// of fakes. It owns the child processes, their ports, data directories, logs,
// credentials and the admin kubeconfig.
//
// It is test and developer tooling: production binaries must never import it.
// Unlike the rest of pkg/, it reads environment variables (TESSERA_K8S_BIN_DIR,
// TESSERA_SKIP_K8S) because its callers are `go test` and hack/ scripts.
//
// The binaries come from hack/build-k8s-bins.sh (bin/etcd, bin/kube-apiserver).
// No controller-manager, scheduler or kubelet runs: create nodes with their
// status (capacity, allocatable, conditions) in the Create call.
package k8stest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
)

const (
	// EnvBinDir overrides where etcd and kube-apiserver are looked up.
	EnvBinDir = "TESSERA_K8S_BIN_DIR"

	buildHint          = "run `make k8s-bins` or hack/build-k8s-bins.sh"
	defaultReadyTimout = 60 * time.Second
	stopGracePeriod    = 10 * time.Second
	logTailLines       = 30
	adminUser          = "tessera-admin"
)

// ErrBinaryMissing is returned (wrapped) by Start when etcd or kube-apiserver
// has not been built.
var ErrBinaryMissing = errors.New("kubernetes test binary missing")

// Options configures Start. The zero value is usable.
type Options struct {
	// BinDir holds the etcd and kube-apiserver binaries. Default: $TESSERA_K8S_BIN_DIR,
	// else bin/ in the module root found by walking up from the working directory.
	BinDir string
	// DataDir receives etcd data, certificates, credentials, the kubeconfig and the
	// child logs (etcd.log, kube-apiserver.log). Default: a new temporary directory
	// that Stop removes. A caller-provided directory is kept, and etcd data in it reused.
	DataDir string
	// ReadyTimeout bounds the wait for each component to become ready. Default: 60s.
	ReadyTimeout time.Duration
	// APIServerArgs are extra kube-apiserver flags, after the defaults (e.g.
	// "--feature-gates=GenericWorkload=true",
	// "--runtime-config=scheduling.k8s.io/v1alpha2=true").
	APIServerArgs []string
}

// ControlPlane is a running etcd + kube-apiserver pair.
type ControlPlane struct {
	// Kubeconfig is the path of an admin kubeconfig (token in group system:masters).
	Kubeconfig string
	// DataDir is where data, credentials and logs live.
	DataDir string

	restConfig *rest.Config
	client     kubernetes.Interface
	etcd       *process
	apiserver  *process // nil while StopAPIServer has it stopped

	// What RestartAPIServer needs to start the apiserver again as it was.
	apiserverBin    string
	apiserverArgs   []string
	readyTimeout    time.Duration
	apiserverStarts int
	removeDir       bool
	stopOnCtx       func() bool
	stopOnce        sync.Once
	stopErr         error
	stopTimeout     time.Duration
}

// RESTConfig returns a copy of the admin client configuration, with client-side
// rate limiting raised so that tests are not throttled.
func (c *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// ServiceAccountKeyFile is the PEM private key the apiserver signs and
// verifies service-account tokens with (--service-account-signing-key-file),
// for tests that mint tokens as kube-controller-manager's token controller does.
func (c *ControlPlane) ServiceAccountKeyFile() string { return filepath.Join(c.DataDir, "sa.key") }

// Client returns an admin clientset built from RESTConfig.
func (c *ControlPlane) Client() kubernetes.Interface { return c.client }

// Start launches etcd and kube-apiserver on free 127.0.0.1 ports and returns once
// the apiserver reports ready and the default namespace exists. The processes are
// stopped by Stop or when ctx is cancelled, whichever comes first; they also die
// with the calling process.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	logger := klog.FromContext(ctx)
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = defaultReadyTimout
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = defaultBinDir(); err != nil {
			return nil, err
		}
	}
	etcdBin, apiserverBin := filepath.Join(opts.BinDir, "etcd"), filepath.Join(opts.BinDir, "kube-apiserver")
	for _, bin := range []string{etcdBin, apiserverBin} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%w: %s: %s", ErrBinaryMissing, bin, buildHint)
		}
	}

	cp := &ControlPlane{DataDir: opts.DataDir, stopTimeout: stopGracePeriod}
	if cp.DataDir == "" {
		if cp.DataDir, err = os.MkdirTemp("", "tessera-k8stest-"); err != nil {
			return nil, fmt.Errorf("creating control plane data dir: %w", err)
		}
		cp.removeDir = true
	} else if err := os.MkdirAll(cp.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating control plane data dir: %w", err)
	}
	defer func() {
		if err != nil {
			cp.removeDir = false // keep the logs that err points to
			_ = cp.Stop()
		}
	}()

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	apiURL := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))

	begin := time.Now()
	cp.etcd, err = startProcess(etcdBin, filepath.Join(cp.DataDir, "etcd.log"), etcdArgs(cp.DataDir, etcdURL, peerURL))
	if err != nil {
		return nil, err
	}
	if err := cp.etcd.waitReady(ctx, opts.ReadyTimeout, func(ctx context.Context) error {
		return etcdHealthy(ctx, etcdURL)
	}); err != nil {
		return nil, err
	}
	logger.V(2).Info("Started etcd", "url", etcdURL, "took", time.Since(begin))

	token, err := writeCredentials(cp.DataDir)
	if err != nil {
		return nil, err
	}
	begin = time.Now()
	cp.apiserverBin, cp.readyTimeout = apiserverBin, opts.ReadyTimeout
	cp.apiserverArgs = append(apiserverArgs(cp.DataDir, etcdURL, ports[2]), opts.APIServerArgs...)
	cp.apiserverStarts = 1
	cp.apiserver, err = startProcess(apiserverBin, filepath.Join(cp.DataDir, "kube-apiserver.log"), cp.apiserverArgs)
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(cp.DataDir, "certs", "apiserver.crt")
	if err := cp.apiserver.waitReady(ctx, opts.ReadyTimeout, func(ctx context.Context) error {
		if cp.client == nil { // the apiserver writes its self-signed cert shortly after start
			ca, err := readCertificates(caFile)
			if err != nil {
				return err
			}
			cp.restConfig = adminRESTConfig(apiURL, ca, token)
			client, err := kubernetes.NewForConfig(cp.restConfig)
			if err != nil {
				return fmt.Errorf("creating client: %w", err)
			}
			cp.client = client
		}
		err := apiserverReady(ctx, cp.client)
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			// Read the certificate again: this one is not the one the
			// apiserver serves (it had not written it yet).
			cp.client = nil
		}
		return err
	}); err != nil {
		return nil, err
	}
	logger.V(2).Info("Started kube-apiserver", "url", apiURL, "took", time.Since(begin))

	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading apiserver certificate: %w", err)
	}
	cp.Kubeconfig = filepath.Join(cp.DataDir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfigFor(apiURL, ca, token), cp.Kubeconfig); err != nil {
		return nil, fmt.Errorf("writing kubeconfig: %w", err)
	}
	cp.stopOnCtx = context.AfterFunc(ctx, func() {
		if err := cp.Stop(); err != nil {
			logger.Error(err, "Stopping control plane after context cancellation")
		}
	})
	return cp, nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after a grace
// period) and leaves etcd running, so that tests can see how clients behave
// while the API server cannot be reached; RestartAPIServer brings it back.
func (c *ControlPlane) StopAPIServer() error {
	if c.apiserver == nil {
		return errors.New("stopping kube-apiserver: it is not running")
	}
	p := c.apiserver
	c.apiserver = nil
	return p.stop(c.stopTimeout)
}

// RestartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same address with the same certificates and credentials, and returns once
// it is ready. Its log goes to kube-apiserver.<n>.log.
func (c *ControlPlane) RestartAPIServer(ctx context.Context) error {
	if c.apiserver != nil {
		return errors.New("restarting kube-apiserver: it is running")
	}
	c.apiserverStarts++
	p, err := startProcess(c.apiserverBin, filepath.Join(c.DataDir, fmt.Sprintf("kube-apiserver.%d.log", c.apiserverStarts)), c.apiserverArgs)
	if err != nil {
		return err
	}
	c.apiserver = p
	return p.waitReady(ctx, c.readyTimeout, func(ctx context.Context) error { return apiserverReady(ctx, c.client) })
}

// Stop terminates kube-apiserver, then etcd (SIGTERM, then SIGKILL after a grace
// period) and removes a temporary data dir. It reports a component that crashed
// earlier or had to be killed, and then keeps the data dir and its logs. Calling
// it again returns the first result.
func (c *ControlPlane) Stop() error {
	c.stopOnce.Do(func() {
		if c.stopOnCtx != nil {
			c.stopOnCtx()
		}
		var errs []error
		for _, p := range []*process{c.apiserver, c.etcd} {
			if p != nil {
				errs = append(errs, p.stop(c.stopTimeout))
			}
		}
		c.stopErr = errors.Join(errs...)
		if c.stopErr != nil || !c.removeDir {
			return // a failure's logs stay for inspection
		}
		if err := os.RemoveAll(c.DataDir); err != nil {
			c.stopErr = fmt.Errorf("removing control plane data dir: %w", err)
		}
	})
	return c.stopErr
}

func etcdArgs(dataDir, clientURL, peerURL string) []string {
	return []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dataDir, "etcd"),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--unsafe-no-fsync", // test data: durability is not wanted, speed is
	}
}

func apiserverArgs(dataDir, etcdURL string, port int) []string {
	saKey := filepath.Join(dataDir, "sa.key")
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dataDir, "certs"),
		"--token-auth-file=" + filepath.Join(dataDir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24",
		// No controller-manager runs: nothing would create service-account tokens
		// or lift the not-ready taint.
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
	}
}

// writeCredentials writes the service-account signing key and a static token
// file with one admin token, which it returns.
func writeCredentials(dir string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("generating service account key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), keyPEM, 0o600); err != nil {
		return "", fmt.Errorf("writing service account key: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generating admin token: %w", err)
	}
	token := hex.EncodeToString(raw)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(tokenFileLine(token)), 0o600); err != nil {
		return "", fmt.Errorf("writing token file: %w", err)
	}
	return token, nil
}

// readCertificates reads the PEM certificates the apiserver writes into
// file, and fails unless the whole file is complete certificates. The
// apiserver writes the file in place (truncate, then write): read at the
// wrong moment it was empty, and a client made with no CA data trusts the
// system's roots instead, so that every readiness check failed on the
// certificate until the deadline (a CI run, under load).
func readCertificates(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading apiserver certificate: %w", err)
	}
	rest, n := data, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("apiserver certificate %s: a %s block, want certificates", file, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("apiserver certificate %s: %w", file, err)
		}
		n++
	}
	if n == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("apiserver certificate %s is not written yet (%d certificates, %d bytes left over)", file, n, len(bytes.TrimSpace(rest)))
	}
	return data, nil
}

// tokenFileLine is the --token-auth-file line (token,user,uid,"groups") of the admin.
func tokenFileLine(token string) string {
	return fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", token, adminUser, adminUser)
}

func adminRESTConfig(host string, caPEM []byte, token string) *rest.Config {
	return &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             5000,
		Burst:           5000,
	}
}

// kubeconfigFor renders an admin kubeconfig for the apiserver at server.
func kubeconfigFor(server string, caPEM []byte, token string) *clientcmdapi.Config {
	const name = "tessera-local"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: metav1.NamespaceDefault}
	cfg.CurrentContext = name
	return cfg
}

func etcdHealthy(ctx context.Context, clientURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd /health: %s", resp.Status)
	}
	return nil
}

// apiserverReady requires /readyz (which includes RBAC bootstrap) and the default
// namespace, which the apiserver creates a moment after it starts serving.
func apiserverReady(ctx context.Context, client kubernetes.Interface) error {
	if body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("apiserver /readyz: %w: %s", err, body)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("getting default namespace: %w", err)
	}
	return nil
}

// freePorts asks the kernel for n distinct free ports on 127.0.0.1. A port can in
// principle be taken between here and the child binding it; the child then fails
// to start and Start says so.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// defaultBinDir is $TESSERA_K8S_BIN_DIR, else bin/ next to the nearest go.mod
// above the working directory (the repository root for `go test`).
func defaultBinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		return dir, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding kubernetes binaries: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w: no go.mod above the working directory and %s is unset: %s", ErrBinaryMissing, EnvBinDir, buildHint)
		}
		dir = parent
	}
}
