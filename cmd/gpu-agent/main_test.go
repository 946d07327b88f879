package main

import (
	"bytes"
	"context"
	"errors"
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

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tessera-gpu/tessera/pkg/version"
)

// TestUsageErrors: a bad command line exits 2 with a message naming the flag
// and the allowed values, or suggesting the flag meant; nothing is opened.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "share policy", args: []string{"--share-policy=spread"},
			want: []string{"invalid --share-policy", `"spread"`, `"packed" or "distributed"`}},
		{name: "drain policy", args: []string{"--mig-drain-policy", "drain"},
			want: []string{"invalid --mig-drain-policy", `"drain"`, "wait or evict"}},
		{name: "xid policy", args: []string{"--health-xid-policy", "ignore=x"},
			want: []string{"invalid --health-xid-policy", `"x" is not an xid`}},
		{name: "backend", args: []string{"--backend", "cuda"},
			want: []string{"invalid --backend", `unknown gpu backend "cuda"`, "auto, nvml, none or sim:<machine>"}},
		{name: "memory limit", args: []string{"--memory-limit", "lots"},
			want: []string{"invalid --memory-limit", "48Mi"}},
		{name: "duration syntax", args: []string{"--collection-interval=soon"},
			want: []string{`invalid argument "soon" for "--collection-interval"`}},
		{name: "duration not positive", args: []string{"--shutdown-timeout=0s"},
			want: []string{"invalid --shutdown-timeout=0s", "> 0"}},
		{name: "several at once", args: []string{"--share-policy=x", "--mig-drain-policy=y"},
			want: []string{"--share-policy", "--mig-drain-policy"}},
		{name: "standalone layout without its file", args: []string{"--mig-config=all-1g.10gb"},
			want: []string{"--mig-config=all-1g.10gb needs --mig-config-file"}},
		{name: "mistyped flag", args: []string{"--backnd=sim:dgx-h100"},
			want: []string{"unknown flag: --backnd", "Did you mean this?\n\t--backend"}},
		{name: "mistyped flag prefix", args: []string{"--collection=10s"},
			want: []string{"unknown flag: --collection", "--collection-interval"}},
		{name: "unknown flag, nothing close", args: []string{"--frobnicate"},
			want: []string{"unknown flag: --frobnicate"}},
		{name: "subcommand flag", args: []string{"discover", "-o", "yaml", "--backend", "sim:dgx-h100"},
			want: []string{"invalid --output", "table or json"}},
		{name: "mistyped command", args: []string{"discovr"},
			want: []string{`unknown command "discovr"`, "discover"}},
		{name: "missing required flag", args: []string{"layout", "check"},
			want: []string{`required flag(s) "config" not set`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := execute(t.Context(), tt.args, &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr.String())
				}
			}
			if tt.name == "unknown flag, nothing close" && strings.Contains(stderr.String(), "Did you mean") {
				t.Errorf("a suggestion for a flag nothing resembles:\n%s", stderr.String())
			}
		})
	}
}

func TestSuggestFlag(t *testing.T) {
	root := newRootCommand()
	tests := []struct{ typed, want string }{
		{"backnd", "backend"},
		{"metrics-adress", "metrics-address"}, //nolint:misspell // the typo is the test input
		{"Node-Name", "node-name"},
		{"kubeconfig=x", "kubeconfig"},
		{"zzz", ""},
	}
	for _, tt := range tests {
		if got := suggestFlag(root, tt.typed); got != tt.want {
			t.Errorf("suggestFlag(%q) = %q, want %q", tt.typed, got, tt.want)
		}
	}
}

// buildAgent builds the gpu-agent binary once per test binary run.
func buildAgent(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "gpu-agent")
	cmd := exec.Command(goTool, "build", "-o", bin, "-ldflags", "-X github.com/tessera-gpu/tessera/pkg/version.Version=v9.8.7-test", ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBinary runs the built gpu-agent: --version, the exit code of a usage
// error, and a standalone agent that becomes ready and, on SIGTERM, shuts
// down within its shutdown timeout with exit code 0.
func TestBinary(t *testing.T) {
	bin := buildAgent(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()} // no KUBERNETES_SERVICE_HOST: standalone

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil || strings.TrimSpace(string(out)) != "gpu-agent version v9.8.7-test" {
			t.Errorf("gpu-agent --version = %q, %v", out, err)
		}
		if version.Version == "v9.8.7-test" {
			t.Error("the test binary itself is stamped: the check proves nothing")
		}
	})

	t.Run("usage error", func(t *testing.T) {
		cmd := exec.Command(bin, "--share-policy=spread")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
			t.Fatalf("gpu-agent --share-policy=spread: %v, want exit code %d\n%s", err, exitUsage, out)
		}
		if !strings.Contains(string(out), "invalid --share-policy") {
			t.Errorf("output does not name the flag:\n%s", out)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		dir := t.TempDir()
		addr := freeAddress(t)
		var logs bytes.Buffer
		cmd := exec.Command(bin, "--backend=sim:dgx-h100", "--metrics-address="+addr,
			"--device-plugin-dir="+filepath.Join(dir, "dp"), "--pod-resources-socket="+filepath.Join(dir, "none.sock"),
			"--shutdown-timeout=10s")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		defer func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				<-exited //nolint:errcheck // killed: its exit status says nothing
			}
		}()
		err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			select {
			case err := <-exited:
				exited <- err
				return false, errors.New("the agent exited before it was ready")
			default:
			}
			return httpGet(ctx, "http://"+addr+"/readyz") == "ok", nil
		})
		if err != nil {
			t.Fatalf("waiting for /readyz: %v\n%s", err, logs.String())
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("after SIGTERM: %v, want exit code 0\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the agent did not exit within 30 s of SIGTERM (shutdown timeout 10 s)\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), `"Shut down"`) {
			t.Errorf("no shutdown log:\n%s", logs.String())
		}
	})
}

// freeAddress returns a 127.0.0.1 address with a port free a moment ago.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// httpGet returns the body of a 200 response, or "".
func httpGet(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(body)
}
