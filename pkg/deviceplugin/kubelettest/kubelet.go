// Package kubelettest runs the kubelet's own device manager
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager) in a test, so that device
// plugins are registered, listed, watched and allocated by the code that does
// it on a node. The device manager listens on the fixed path
// /var/lib/kubelet/device-plugins/kubelet.sock; Main re-executes the test
// binary in a private user and mount namespace with a temporary directory
// mounted over /var/lib, so no test touches the host's kubelet.
//
// Test tooling only: it pulls in k8s.io/kubernetes, which production
// binaries must not import.
package kubelettest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
)

const (
	inNamespaceEnv = "TESSERA_DEVICEPLUGIN_TEST_NS"
	// varLibEnv names the directory the child mounts over /var/lib; the
	// parent makes it and removes it when the child exits, so no run leaves
	// it behind.
	varLibEnv = "TESSERA_DEVICEPLUGIN_TEST_VARLIB"
	// RequireEnv, set to 1, makes Require fail instead of skip where no
	// private namespace can be made (CI).
	RequireEnv = "TESSERA_REQUIRE_TOOLS"
)

// PluginDir is the kubelet's device-plugin directory inside the private
// namespace; device plugins under test serve there.
const PluginDir = api.DevicePluginPath

// namespaceSkip is why the device manager cannot run here ("" when it can).
var namespaceSkip string

// Main runs the package's tests in a private user and mount namespace with
// a private /var/lib; call it from TestMain. Where no namespace can be made
// the tests run in place and Require skips those that need one.
func Main(m *testing.M) {
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

// Require skips t (fails it with TESSERA_REQUIRE_TOOLS=1) when the tests
// do not run in the private namespace Main makes.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(inNamespaceEnv) != "1" && namespaceSkip == "" {
		namespaceSkip = "TestMain does not call kubelettest.Main"
	}
	if namespaceSkip == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1)", namespaceSkip, RequireEnv)
	}
	t.Skip("skipping: " + namespaceSkip)
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

// Kubelet is the kubelet's real device manager with a settable set of
// active pods. Its methods are safe for concurrent use.
type Kubelet struct {
	t testing.TB

	mu   sync.Mutex
	mgr  *devicemanager.ManagerImpl
	pods []*v1.Pod
}

type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return false } // never garbage-collect allocations in tests

// Start starts a device manager on an empty PluginDir (a checkpoint would
// otherwise carry allocations from one test into the next) and stops it
// when the test ends.
func Start(t testing.TB) *Kubelet {
	t.Helper()
	Require(t)
	if err := os.MkdirAll(PluginDir, 0o750); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(PluginDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(PluginDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	k := &Kubelet{t: t}
	k.mgr = k.newManager()
	t.Cleanup(k.Stop)
	return k
}

func (k *Kubelet) newManager() *devicemanager.ManagerImpl {
	k.t.Helper()
	mgr, err := devicemanager.NewManagerImpl(nil, topologymanager.NewFakeManager())
	if err != nil {
		k.t.Fatalf("NewManagerImpl: %v", err)
	}
	if err := mgr.Start(klog.Background(), k.ActivePods, sourcesReady{}, containermap.NewContainerMap(), sets.New[string]()); err != nil {
		k.t.Fatalf("starting the device manager: %v", err)
	}
	return mgr
}

// Manager is the running device manager.
func (k *Kubelet) Manager() *devicemanager.ManagerImpl {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.mgr
}

// Stop stops the device manager (its socket goes away).
func (k *Kubelet) Stop() {
	k.mu.Lock()
	mgr := k.mgr
	k.mgr = nil
	k.mu.Unlock()
	if mgr != nil {
		_ = mgr.Stop(klog.Background())
	}
}

// Restart stops the device manager and starts a new one, as a kubelet
// restart does; it keeps the checkpoint and the active pods.
func (k *Kubelet) Restart() {
	k.t.Helper()
	k.Stop()
	mgr := k.newManager()
	k.mu.Lock()
	k.mgr = mgr
	k.mu.Unlock()
}

// ActivePods are the pods the device manager counts as running.
func (k *Kubelet) ActivePods() []*v1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.pods)
}

// Admit makes p active and runs the kubelet's allocation for each of its
// containers, as pod admission does.
func (k *Kubelet) Admit(p *v1.Pod) error {
	k.mu.Lock()
	k.pods = append(k.pods, p)
	mgr := k.mgr
	k.mu.Unlock()
	for i := range p.Spec.Containers {
		if err := mgr.Allocate(p, &p.Spec.Containers[i]); err != nil {
			return fmt.Errorf("allocating devices to container %s of pod %s: %w", p.Spec.Containers[i].Name, p.Name, err)
		}
	}
	return nil
}

// Forget drops the pod named name from the active pods (it ended, or its
// admission failed); the device manager frees its devices at its next
// allocation.
func (k *Kubelet) Forget(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = slices.DeleteFunc(k.pods, func(p *v1.Pod) bool { return p.Name == name })
}
