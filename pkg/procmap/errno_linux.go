package procmap

import "syscall"

// errNoSuchProcess is what reading /proc/<pid>/cgroup of a process that
// exited while the file was open returns.
var errNoSuchProcess error = syscall.ESRCH
