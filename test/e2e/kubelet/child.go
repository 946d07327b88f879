package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"k8s.io/klog/v2"
)

// configEnv carries the path of a child's JSON Config; its presence makes
// RunIfChild run the stand-in.
const configEnv = "TESSERA_KUBELET_STANDIN_CONFIG"

// probeEnv makes RunIfChild exit at once: Supported's probe.
const probeEnv = "TESSERA_KUBELET_STANDIN_PROBE"

// RunIfChild runs the stand-in and exits when this process is one that
// Start launched; otherwise it returns at once. Call it first in main (and
// in TestMain) of every binary that calls Start.
func RunIfChild() {
	if os.Getenv(probeEnv) != "" {
		os.Exit(0)
	}
	path := os.Getenv(configEnv)
	if path == "" {
		return
	}
	fs := flag.NewFlagSet("kubelet-standin", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "2")
	err := runChild(path)
	klog.Flush()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubelet stand-in:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	// Our own /var/lib: mounts made here stay in this mount namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_PRIVATE|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	if err := syscall.Mount(cfg.VarLib, "/var/lib", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s over /var/lib: %w", cfg.VarLib, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, cfg)
}

// Process is a running stand-in.
type Process struct {
	Config Config
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// Start launches a stand-in for cfg: this binary again (RunIfChild takes
// over there) in a new user and mount namespace, its output to logPath. It
// is killed if this process dies.
func Start(cfg Config, logPath string) (*Process, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.PluginDir(), 0o750); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.PluginDir(), err)
	}
	cfgPath := filepath.Join(cfg.VarLib, "standin.json")
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, fmt.Errorf("writing stand-in config: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this executable: %w", err)
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating stand-in log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(self)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), configEnv+"="+cfgPath)
	cmd.SysProcAttr = namespaced()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the kubelet stand-in for %s in a new user and mount namespace: %w", cfg.NodeName, err)
	}
	p := &Process{Config: cfg, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// namespaced runs a child in a new user and mount namespace (uid and gid 0
// there are ours), in its own process group (a Ctrl-C reaches the parent
// only, which stops its children in order), killed if the parent dies.
func namespaced() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
		Setpgid:     true,
	}
}

// Supported reports why stand-ins cannot start here (nil when they can):
// unprivileged user namespaces may be disabled.
func Supported() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this executable: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	cmd.SysProcAttr = namespaced()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("starting a process in a new user and mount namespace: %w %s", err, out)
	}
	return nil
}

// Pid is the stand-in's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the stand-in has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for the exit.
func (p *Process) Stop() error {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.ExitCode() == -1 { // killed by our SIGTERM before its handler ran
		return nil
	}
	if p.err != nil {
		return fmt.Errorf("kubelet stand-in for %s: %w", p.Config.NodeName, p.err)
	}
	return nil
}
