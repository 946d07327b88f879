package gpu

import "errors"

// Sentinel errors shared by every backend. Backends wrap them with the noun that
// failed, so callers test with errors.Is and users read what went wrong.
var (
	// ErrNotSupported means the device or driver lacks the feature or counter.
	// Telemetry treats it as "absent", never as zero.
	ErrNotSupported = errors.New("not supported by this gpu or driver")
	// ErrGPULost means the GPU fell off the bus or stopped answering.
	ErrGPULost = errors.New("gpu is lost")
	// ErrTimeout means the driver did not answer in time.
	ErrTimeout = errors.New("driver timed out")
	// ErrLibraryNotFound means libnvidia-ml could not be loaded.
	ErrLibraryNotFound = errors.New("libnvidia-ml.so.1 not found (is the NVIDIA driver installed and the library mounted into the container?)")
	// ErrDriverNotLoaded means libnvidia-ml loaded but the kernel driver is not running.
	ErrDriverNotLoaded = errors.New("the NVIDIA kernel driver is not loaded")
	// ErrNoPermission means the caller lacks the privilege for the operation.
	ErrNoPermission = errors.New("insufficient permissions")
	// ErrInvalidArgument means the request named something that does not exist or is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrInsufficientResources means a MIG instance does not fit in what is free.
	ErrInsufficientResources = errors.New("insufficient free resources")
	// ErrInUse means the resource is busy (for example a MIG instance with running processes).
	ErrInUse = errors.New("in use")
	// ErrResetRequired means a MIG mode change is pending until the GPU is reset.
	ErrResetRequired = errors.New("gpu reset required for the change to take effect")
	// ErrUnknownDevice means a GPU index, UUID or MIG instance is not on this machine.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrUnknownProfile means a MIG profile name is not valid on the GPU.
	ErrUnknownProfile = errors.New("unknown mig profile")
	// ErrNoDevices is returned by the none backend for operations that need a GPU.
	ErrNoDevices = errors.New("no gpu on this machine")
	// ErrClosed means the backend was closed.
	ErrClosed = errors.New("backend closed")
)
