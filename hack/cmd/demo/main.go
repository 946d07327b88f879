// Command demo runs a whole Tessera cluster on this machine, with no GPU and
// no cluster needed, and prints what happened: a real etcd + kube-apiserver,
// six simulated GPU nodes (a kubelet stand-in driving the kubelet's device
// manager and a real gpu-agent each), the real gpu-scheduler, an MLOps
// stack's pods, a MIG layout change mid-way. The scenario is
// test/e2e/cluster's, which test/e2e asserts. `make demo` runs it;
// `make demo KEEP=1` leaves the cluster up until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tessera-gpu/tessera/test/e2e/cluster"
	"github.com/tessera-gpu/tessera/test/e2e/kubelet"
)

func main() {
	kubelet.RunIfChild() // the stand-ins are this binary in their own namespaces

	dir := flag.String("dir", "_output/demo", "directory for the control plane, configs and logs (emptied first)")
	bin := flag.String("bin", "bin", "directory holding gpu-agent, gpu-scheduler, etcd and kube-apiserver")
	keep := flag.Bool("keep", false, "leave the cluster up after the summary, until Ctrl-C")
	traces := flag.String("traces", "", "directory of the openb traces (make demo TRACES=dir); the trace-replay step is skipped without them")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *bin, *traces, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, bin, traces string, keep bool) (err error) {
	start := time.Now()
	bin, err = filepath.Abs(bin)
	if err != nil {
		return err
	}
	printIntro()
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, BinDir: bin, Progress: progress(start)})
	if c != nil {
		defer func() {
			if stopErr := teardown(c); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	res, err := c.RunScenario(ctx)
	if err != nil {
		return interrupted(ctx, fmt.Errorf("%w (logs: %s)", err, c.Dir))
	}
	printResult(res, c)
	replay(ctx, bin, traces, filepath.Join(c.Dir, "placement"))
	fmt.Printf("\nDone in %.0fs: %s\n", time.Since(start).Seconds(), summary(res))
	if keep {
		fmt.Printf("\nThe cluster stays up (KEEP=1):\n  export KUBECONFIG=%s\n  kubectl get nodes,gpunodes -o wide; kubectl get pods -A -o wide\n"+
			"Tear down with Ctrl-C here, or: kill -INT %d\n", c.Kubeconfig, os.Getpid())
		<-ctx.Done()
	}
	return nil
}

// teardown stops everything and says so only when something was left.
func teardown(c *cluster.Cluster) error {
	fmt.Println("\nTearing down ...")
	err := c.Stop()
	if left := c.Leftovers(); len(left) > 0 {
		for _, l := range left {
			fmt.Println("  left behind:", l)
		}
		return fmt.Errorf("%d processes or mounts left after teardown", len(left))
	}
	fmt.Printf("Stopped: no process or mount left. Logs in %s\n", c.Dir)
	return err
}

func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return err
}

func progress(start time.Time) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Printf("%5.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}
