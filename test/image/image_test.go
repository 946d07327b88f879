package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

const (
	repoRoot    = "../.."
	testVersion = "v0.0.0-imagetest"
	// basePath is the PATH the distroless base image sets.
	basePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// baseLibraries are the shared libraries gcr.io/distroless/base-debian12
// holds (Debian 12's libc6 and libssl3). A binary that loads anything else
// (libgcc_s, libstdc++, libz) would not start in the image.
var baseLibraries = []string{
	"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
	"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2",
	"libanl.so.1", "libutil.so.1", "libnss_dns.so.2", "libnss_files.so.2",
	"libssl.so.3", "libcrypto.so.3",
}

// passwd and group are the base image's /etc/passwd and /etc/group.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
)

// requireTools returns the paths of the tools the test runs; without them (or
// without root) it skips, and under TESSERA_REQUIRE_TOOLS=1 (CI) it fails.
func requireTools(t *testing.T) map[string]string {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("TESSERA_REQUIRE_TOOLS") == "1" {
			t.Fatalf(format+" (TESSERA_REQUIRE_TOOLS=1)", args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		missing("running a binary in a chroot needs root (euid %d)", os.Geteuid())
	}
	tools := map[string]string{}
	for _, name := range []string{"make", "ldd", "unshare", "mount", "chroot"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing("%s not found: %v", name, err)
		}
		tools[name] = p
	}
	return tools
}

// build builds the binaries as the Dockerfile's build stage does (make build,
// cgo on) into a temporary directory and returns the directory.
func build(t *testing.T, makeTool string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(makeTool, "--no-print-directory", "build", "VERSION="+testVersion, "BIN="+dir)
	cmd.Dir = repoRoot
	// Under `make test`, the outer make's flags and variables stay out.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	return dir
}

// makeVariable returns the value of a ":=" variable of the Makefile.
func makeVariable(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("Makefile sets no %s", name)
	}
	return string(m[1])
}

// libraryRE matches the libraries in ldd's output: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
// and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)".
var libraryRE = regexp.MustCompile(`^\s*(?:(\S+) => )?(/\S+) \(0x[0-9a-f]+\)$`)

// libraries lists the files the dynamic loader maps for binary, as ldd prints them.
func libraries(t *testing.T, ldd, binary string) []string {
	t.Helper()
	out, err := exec.Command(ldd, binary).CombinedOutput()
	if err != nil {
		t.Fatalf("ldd %s: %v\n%s", binary, err, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "linux-vdso") {
			continue
		}
		m := libraryRE.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("ldd %s: cannot read line %q (a library not found?)", binary, sc.Text())
		}
		libs = append(libs, m[2])
	}
	if len(libs) == 0 {
		t.Fatalf("ldd %s lists no library: the Dockerfile builds with cgo so that go-nvml can dlopen libnvidia-ml", binary)
	}
	return libs
}

// rootfs assembles the root filesystem of stage s: its binaries at their
// COPY destinations, the libraries they load (each of which the base must
// ship), the base's passwd and group, and the mount points a container
// runtime fills (/proc, /dev) and /tmp.
func rootfs(t *testing.T, tools map[string]string, s *stage, binDir string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range s.Copies {
		if filepath.Dir(src) != "/src/bin" {
			t.Fatalf("stage %s copies %s from the build stage; the test knows only /src/bin/<binary>", s.Name, src)
		}
		bin := filepath.Join(binDir, filepath.Base(src))
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatalf("stage %s: %v", s.Name, err)
		}
		write(dst, data, 0o755)
		for _, lib := range libraries(t, tools["ldd"], bin) {
			if !slices.Contains(baseLibraries, filepath.Base(lib)) {
				t.Errorf("stage %s: %s loads %s, which the distroless base image does not ship", s.Name, dst, lib)
				continue
			}
			data, err := os.ReadFile(lib) // follows the symlink, as the base holds the file
			if err != nil {
				t.Fatal(err)
			}
			write(lib, data, 0o755)
		}
	}
	write("etc/passwd", []byte(passwd), 0o644)
	write("etc/group", []byte(group), 0o644)
	for _, d := range []string{"proc", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"null", "zero", "random", "urandom"} {
		write(filepath.Join("dev", d), nil, 0o666)
	}
	return root
}

// chrootScript runs in a private mount namespace (unshare --mount), so the
// mounts go away with it: it mounts /proc and the /dev nodes a container
// runtime gives every container, then replaces itself with the entrypoint
// chrooted into the image's root as the image's user, keeping the process
// id so that the test can signal the entrypoint.
const chrootScript = `set -e
mount=$1 chroot=$2 root=$3 user=$4; shift 4
"$mount" -t proc proc "$root/proc"
for d in null zero random urandom; do "$mount" --bind "/dev/$d" "$root/dev/$d"; done
exec "$chroot" --userspec="$user" "$root" "$@"
`

// command returns the command that runs the image of stage s (root) with
// args after its entrypoint, with only the image's environment.
func command(ctx context.Context, tools map[string]string, root string, s *stage, args ...string) *exec.Cmd {
	argv := append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", chrootScript, "sh",
		tools["mount"], tools["chroot"], root, s.User}, s.Entrypoint...)
	cmd := exec.CommandContext(ctx, tools["unshare"], append(argv, args...)...)
	cmd.Env = append([]string{basePath}, s.Env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestImagesRunInTheirRootFilesystem runs each image's entrypoint in a root
// filesystem holding only the files the image will hold: both binaries print
// their version as the image's user; the agent serves /metrics of a simulated
// DGX H100 and stops on SIGTERM; go-nvml's dlopen of libnvidia-ml works in
// the image (without a driver the agent says the library is missing; on a
// machine with the NVIDIA driver the test mounts its libnvidia-ml.so.1 into
// the image as the NVIDIA Container Toolkit would and lists the GPUs).
func TestImagesRunInTheirRootFilesystem(t *testing.T) {
	tools := requireTools(t)
	stages, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for n := range stages {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(got, []string{"gpu-agent", "gpu-scheduler"}) {
		t.Fatalf("Dockerfile runtime stages = %v, want [gpu-agent gpu-scheduler]", got)
	}
	agent, sched := stages["gpu-agent"], stages["gpu-scheduler"]
	for _, want := range []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=utility"} {
		if !slices.Contains(agent.Env, want) {
			t.Errorf("gpu-agent image ENV %v lacks %s: the NVIDIA Container Toolkit would not mount libnvidia-ml", agent.Env, want)
		}
	}
	if sched.User == "0:0" || sched.User == "" || strings.HasPrefix(sched.User, "root") {
		t.Errorf("gpu-scheduler image runs as %q; it needs no privilege", sched.User)
	}

	binDir := build(t, tools["make"])
	roots := map[string]string{}
	for name, s := range stages {
		roots[name] = rootfs(t, tools, s, binDir)
	}
	ctx := t.Context()

	// The scheduler's --version names the Kubernetes version it is built
	// from (the Makefile stamps it).
	for name, want := range map[string]string{"gpu-agent": testVersion, "gpu-scheduler": makeVariable(t, "K8S_VERSION")} {
		t.Run(name+" --version", func(t *testing.T) {
			out, err := command(ctx, tools, roots[name], stages[name], "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version in its image: %v\n%s", name, err, out)
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("%s --version = %q, want it to name %s", name, out, want)
			}
		})
	}

	t.Run("gpu-agent serves metrics of a simulated DGX H100", func(t *testing.T) {
		addr := freePort(t)
		var logs bytes.Buffer
		cmd := command(ctx, tools, roots["gpu-agent"], agent, "--backend=sim:dgx-h100", "--metrics-address="+addr)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var body string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			select {
			case err := <-exited:
				return false, fmt.Errorf("the agent exited: %w", err)
			default:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, nil
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				return false, nil
			}
			body = string(b)
			return true, nil
		})
		if err != nil {
			t.Fatalf("scraping the agent in its image at %s: %v\nagent log:\n%s", addr, err, logs.String())
		}
		for gpu := range 8 {
			if want := fmt.Sprintf(`DCGM_FI_DEV_FB_FREE{gpu="%d",`, gpu); !strings.Contains(body, want) {
				t.Errorf("/metrics has no %s...}", want)
			}
		}
		if !strings.Contains(body, `modelName="NVIDIA H100 80GB HBM3"`) {
			t.Errorf("/metrics does not name the H100:\n%.2000s", body)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("the agent exited with %v after SIGTERM\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the agent did not stop within 30 s of SIGTERM\n%s", logs.String())
		}
	})

	t.Run("gpu-agent dlopens libnvidia-ml in its image", func(t *testing.T) {
		driverLib := hostNVML()
		root := roots["gpu-agent"]
		if driverLib == "" {
			out, err := command(ctx, tools, root, agent, "--backend=nvml", "discover").CombinedOutput()
			if err == nil {
				t.Fatalf("gpu-agent --backend=nvml discover succeeded in an image without libnvidia-ml:\n%s", out)
			}
			if !strings.Contains(string(out), "libnvidia-ml.so.1 not found") {
				t.Errorf("gpu-agent --backend=nvml without the driver says %q, want it to name libnvidia-ml.so.1", out)
			}
			t.Logf("no NVIDIA driver on this machine: checked the missing-library path only")
			return
		}
		// As the toolkit does: the driver's library in the image's library
		// directory, found through the loader's default path.
		data, err := os.ReadFile(driverLib)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "lib/x86_64-linux-gnu/libnvidia-ml.so.1"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		// NVML opens /dev/nvidia*; a privileged container sees the host's /dev.
		out, err := runWithHostDev(ctx, tools, root, agent, "--backend=nvml", "discover")
		if err != nil {
			t.Fatalf("gpu-agent --backend=nvml discover with %s in its image: %v\n%s", driverLib, err, out)
		}
		if !strings.Contains(out, "GPU-") {
			t.Errorf("discover lists no GPU UUID:\n%s", out)
		}
		t.Logf("with the driver's %s:\n%s", driverLib, out)
	})
}

// hostNVML returns the path of the driver's libnvidia-ml.so.1 on this
// machine, or "" without an NVIDIA driver.
func hostNVML() string {
	out, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		return ""
	}
	for l := range strings.Lines(string(out)) {
		if name, path, ok := strings.Cut(strings.TrimSpace(l), " => "); ok && strings.HasPrefix(name, "libnvidia-ml.so.1 ") && strings.Contains(name, "x86-64") {
			return strings.TrimSpace(path)
		}
	}
	return ""
}

// runWithHostDev runs the agent image with the host's /dev bound in, as a
// privileged container sees it.
func runWithHostDev(ctx context.Context, tools map[string]string, root string, s *stage, args ...string) (string, error) {
	script := strings.Replace(chrootScript, `for d in null zero random urandom; do "$mount" --bind "/dev/$d" "$root/dev/$d"; done`,
		`"$mount" --rbind /dev "$root/dev"`, 1)
	argv := append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh",
		tools["mount"], tools["chroot"], root, s.User}, s.Entrypoint...)
	cmd := exec.CommandContext(ctx, tools["unshare"], append(argv, args...)...)
	cmd.Env = append([]string{basePath}, s.Env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
