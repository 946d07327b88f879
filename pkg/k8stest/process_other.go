//go:build unix && !linux

package k8stest

import "syscall"

// sysProcAttr puts a child in its own process group, so that Stop reaches all of
// it. Without Pdeathsig, children outlive a test binary that is killed outright.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
