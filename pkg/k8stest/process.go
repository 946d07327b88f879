package k8stest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// process is one child binary whose stdout and stderr go to a log file.
type process struct {
	name, path, logPath string
	cmd                 *exec.Cmd
	done                chan struct{} // closed once the child has exited and been reaped
}

func startProcess(path, logPath string, args []string) (*process, error) {
	p := &process{name: filepath.Base(path), path: path, logPath: logPath, done: make(chan struct{})}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", p.name, err)
	}
	defer logFile.Close() // the child holds its own descriptor
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", p.name, path, err)
	}
	go func() {
		_ = p.cmd.Wait() // the outcome is read from cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

// waitReady polls check until it succeeds, the child exits, or timeout passes.
func (p *process) waitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("exited before becoming ready: %s", p.cmd.ProcessState)
		default:
		}
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := check(checkCtx)
		// A check cut short by the overall deadline says nothing about
		// the child (it failed in the client's rate limiter): keep the
		// one before, which does.
		if err == nil || ctx.Err() == nil || last == nil {
			last = err
		}
		return err == nil, nil
	})
	if err != nil && wait.Interrupted(err) && last != nil {
		err = fmt.Errorf("%w; last check: %w", err, last)
	}
	if err != nil {
		return p.withLog(fmt.Errorf("waiting for %s (%s) to become ready: %w", p.name, p.path, err))
	}
	return nil
}

// stop sends SIGTERM to the child's process group and SIGKILL after grace. It
// reports a child that had already exited (it crashed) or had to be killed.
func (p *process) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.withLog(fmt.Errorf("%s (%s) exited unexpectedly: %s", p.name, p.path, p.cmd.ProcessState))
	default:
	}
	pgid := p.cmd.Process.Pid // Setpgid: the group id is the child's pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("stopping %s: still running %s after SIGTERM, killed", p.name, grace)
	}
}

// withLog appends the end of the child's log to err.
func (p *process) withLog(err error) error {
	data, readErr := os.ReadFile(p.logPath)
	if readErr != nil {
		return fmt.Errorf("%w (reading log: %w)", err, readErr)
	}
	return fmt.Errorf("%w\n--- last %d lines of %s ---\n%s", err, logTailLines, p.logPath, tailLines(data, logTailLines))
}

// tailLines returns the last n lines of data.
func tailLines(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
