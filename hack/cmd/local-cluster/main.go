// Command local-cluster runs pkg/k8stest's etcd + kube-apiserver for interactive
// use until SIGINT or SIGTERM. hack/local-up.sh and hack/local-down.sh drive it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/k8stest"
)

func main() {
	dir := flag.String("dir", "_output/local", "directory for data, logs, the kubeconfig and the pid file")
	binDir := flag.String("bin-dir", "", "directory holding etcd and kube-apiserver (default: <repo>/bin)")
	klog.InitFlags(nil)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *binDir); err != nil {
		fmt.Fprintln(os.Stderr, "local-cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, binDir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolving data dir: %w", err)
	}
	cp, err := k8stest.Start(ctx, k8stest.Options{BinDir: binDir, DataDir: dir})
	if err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "local-cluster.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return errors.Join(fmt.Errorf("writing pid file: %w", err), cp.Stop())
	}
	defer os.Remove(pidFile)
	fmt.Printf("export KUBECONFIG=%s\n", cp.Kubeconfig)

	<-ctx.Done()
	klog.FromContext(ctx).Info("Stopping local control plane")
	return cp.Stop()
}
