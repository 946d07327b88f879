package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// process is a child binary of the cluster (an agent, the scheduler).
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// stopGrace bounds a child's shutdown after SIGTERM before SIGKILL.
const stopGrace = 25 * time.Second

func startProcess(bin, logPath string, args ...string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Own process group: a Ctrl-C reaches the demo only, which stops the
	// children in order; Pdeathsig: they die with it if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{name: filepath.Base(bin), log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %w (see %s)", p.name, p.err, p.log)
	default:
		return nil
	}
}

func (p *process) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed (see %s)", p.name, stopGrace, p.log)
	}
	if p.err != nil && !p.cleanExit() {
		return fmt.Errorf("%s: %w (see %s)", p.name, p.err, p.log)
	}
	return nil
}

// cleanExit accepts kube-scheduler's exit status 1 on SIGTERM when it runs
// without leader election ("finished without leader elect").
func (p *process) cleanExit() bool {
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 || p.name != "gpu-scheduler" {
		return false
	}
	data, err := os.ReadFile(p.log)
	return err == nil && strings.Contains(string(data), "finished without leader elect")
}

// Advertised counts the devices a GPUNode says the agent advertises, per
// resource (share units counted one by one).
func Advertised(gn *v1alpha1.GPUNode) map[string]int {
	out := map[string]int{}
	for _, g := range gn.Status.GPUs {
		if g.Sharing != nil {
			out[g.Sharing.Resource] += int(g.Sharing.Replicas)
		}
		for _, s := range g.MIGSlices {
			if s.Sharing != nil {
				out[s.Sharing.Resource] += int(s.Sharing.Replicas)
			}
		}
	}
	return out
}

// Leftovers lists the processes and mounts of this machine that still refer
// to the cluster's directories: after Stop there must be none.
func (c *Cluster) Leftovers() []string {
	marks := []string{c.Dir}
	if c.sockets != "" {
		marks = append(marks, c.sockets)
	}
	mentions := func(b []byte) bool {
		for _, m := range marks {
			if strings.Contains(string(b), m) {
				return true
			}
		}
		return false
	}
	var out []string
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if mentions(cmdline) || mentions(environ) {
			out = append(out, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if mentions([]byte(l)) {
			out = append(out, "mount: "+l)
		}
	}
	return out
}
