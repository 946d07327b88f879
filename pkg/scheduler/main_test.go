package scheduler

import (
	"os"
	"testing"

	"github.com/tessera-gpu/tessera/test/e2e/kubelet"
)

// TestMain lets this test binary serve as the kubelet stand-ins of
// TestAgentsPublishTheFleet (test/e2e/kubelet re-executes it).
func TestMain(m *testing.M) {
	kubelet.RunIfChild()
	os.Exit(m.Run())
}
