package k8stest

import (
	"context"
	"errors"
	"os"
	"testing"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
)

// EnvSkip, set to 1, makes StartForTest skip the calling test.
const EnvSkip = "TESSERA_SKIP_K8S"

// StartForTest starts a control plane in a temporary directory for one test and
// stops it in t.Cleanup, after the cleanups the test registers later. Missing
// binaries fail the test with the build hint; TESSERA_SKIP_K8S=1 skips the test
// instead (for machines that cannot build them). The control plane does not stop
// with t.Context(), which the testing package cancels before cleanups run, so
// client requests made with it end before the apiserver goes away.
func StartForTest(t testing.TB) *ControlPlane {
	t.Helper()
	return StartForTestWith(t, Options{})
}

// StartForTestWith is StartForTest with options (extra apiserver flags).
func StartForTestWith(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	skipIfDisabled(t)
	ctx := klog.NewContext(context.WithoutCancel(t.Context()), ktesting.NewLogger(t, ktesting.NewConfig()))
	cp, err := Start(ctx, opts)
	if errors.Is(err, ErrBinaryMissing) {
		t.Fatalf("starting control plane: %v (or set %s=1 to skip these tests)", err, EnvSkip)
	}
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return cp
}

// skipIfDisabled skips t when TESSERA_SKIP_K8S=1.
func skipIfDisabled(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvSkip) == "1" {
		t.Skipf("skipping test that needs etcd and kube-apiserver: %s=1", EnvSkip)
	}
}
