package deviceplugin_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// The kubelet's device manager listens on the fixed path
// /var/lib/kubelet/device-plugins/kubelet.sock. To run it in a test without
// touching the host, TestMain re-executes the test binary in a new user and
// mount namespace and bind-mounts a temporary directory over /var/lib there.
const (
	inNamespaceEnv = "TESSERA_DEVICEPLUGIN_TEST_NS"
	// varLibEnv names the directory the child mounts over /var/lib; the parent
	// makes it and removes it when the child exits, so no run leaves it behind.
	varLibEnv = "TESSERA_DEVICEPLUGIN_TEST_VARLIB"
)

// namespaceSkip is why kubelet tests cannot run here ("" when they can).
var namespaceSkip string

func TestMain(m *testing.M) {
	switch os.Getenv(inNamespaceEnv) {
	case "":
		if code, err := reexecInNamespace(); err == nil {
			os.Exit(code)
		} else {
			namespaceSkip = fmt.Sprintf("cannot create a private mount namespace for the kubelet's fixed socket path: %v", err)
		}
	case "1":
		if err := privateVarLib(); err != nil {
			namespaceSkip = fmt.Sprintf("cannot mount a private /var/lib: %v", err)
		}
	}
	os.Exit(m.Run())
}

func reexecInNamespace() (int, error) {
	dir, err := os.MkdirTemp("", "tessera-varlib-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), inNamespaceEnv+"=1", varLibEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok { //nolint:errorlint // exec returns *ExitError directly
			return ee.ExitCode(), nil
		}
		return 0, err
	}
	return 0, nil
}

func privateVarLib() error {
	if err := syscall.Mount("", "/", "", syscall.MS_PRIVATE|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	dir := os.Getenv(varLibEnv)
	if dir == "" {
		return fmt.Errorf("%s is not set by the parent test process", varLibEnv)
	}
	if err := os.MkdirAll(filepath.Join(dir, "kubelet", "device-plugins"), 0o750); err != nil {
		return err
	}
	if err := syscall.Mount(dir, "/var/lib", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s over /var/lib: %w", dir, err)
	}
	return nil
}

func requireNamespace(t *testing.T) {
	t.Helper()
	if namespaceSkip != "" {
		t.Skip("skipping: " + namespaceSkip)
	}
}
