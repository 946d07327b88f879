package nvmlbackend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
)

// noDriver reports whether err means this machine has no usable NVIDIA driver.
func noDriver(err error) bool {
	return errors.Is(err, gpu.ErrLibraryNotFound) || errors.Is(err, gpu.ErrDriverNotLoaded)
}

// TestSystemNVML runs the behavioural suite against the real libnvidia-ml.
func TestSystemNVML(t *testing.T) {
	b, err := nvmlbackend.System()
	if noDriver(err) {
		t.Skipf("skipping: no NVIDIA driver on this machine (%v); the same suite runs against every simulated machine", err)
	}
	if err != nil {
		t.Fatalf("System: %v", err)
	}
	again, err := nvmlbackend.System()
	if err != nil || again != b {
		t.Fatalf("second System() = %p, %v; want the same backend %p", again, err, b)
	}
	gputest.RunSuite(t, b)
}

// TestSystemWithoutDriver checks the message a node without libnvidia-ml gets.
func TestSystemWithoutDriver(t *testing.T) {
	_, err := nvmlbackend.System()
	if err == nil {
		t.Skip("skipping: libnvidia-ml loads on this machine; this test checks the error where it does not")
	}
	if !noDriver(err) {
		t.Fatalf("System() error = %v, want ErrLibraryNotFound or ErrDriverNotLoaded", err)
	}
	for _, want := range []string{"initialising nvml", "NVIDIA"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("System() error %q does not mention %q", err, want)
		}
	}
}
