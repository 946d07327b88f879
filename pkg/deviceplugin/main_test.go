package deviceplugin_test

import (
	"testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/kubelettest"
)

// TestMain runs the tests in a private mount namespace, where the kubelet's
// device manager can listen on its fixed socket path
// /var/lib/kubelet/device-plugins/kubelet.sock without touching the host.
func TestMain(m *testing.M) { kubelettest.Main(m) }
