package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
		return fmt.Errorf("%s exited: %v (see %s)", p.name, p.err, p.log)
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
	var ee *exec.ExitError
	if p.err != nil && !(errors.As(p.err, &ee) && ee.ExitCode() == 0) {
		return fmt.Errorf("%s: %w (see %s)", p.name, p.err, p.log)
	}
	return nil
}

// advertised counts the devices a GPUNode says the agent advertises, per
// resource (share units counted one by one).
func advertised(gn *v1alpha1.GPUNode) map[string]int {
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
