package nvmlbackend

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// returnError is an NVML return code translated to a pkg/gpu sentinel. It keeps
// the NVML code for the message and unwraps to the sentinel for errors.Is.
type returnError struct {
	ret      nvml.Return
	sentinel error
}

func (e *returnError) Error() string {
	if e.sentinel == nil {
		return fmt.Sprintf("nvml: %s", returnName(e.ret))
	}
	return fmt.Sprintf("%v (nvml: %s)", e.sentinel, returnName(e.ret))
}

func (e *returnError) Unwrap() error { return e.sentinel }

// returnName names a return code without calling into libnvidia-ml, which may
// not be loaded.
func returnName(ret nvml.Return) string {
	if name, ok := returnNames[ret]; ok {
		return name
	}
	return fmt.Sprintf("return code %d", int32(ret))
}

var returnNames = map[nvml.Return]string{
	nvml.ERROR_UNINITIALIZED:           "ERROR_UNINITIALIZED",
	nvml.ERROR_INVALID_ARGUMENT:        "ERROR_INVALID_ARGUMENT",
	nvml.ERROR_NOT_SUPPORTED:           "ERROR_NOT_SUPPORTED",
	nvml.ERROR_NO_PERMISSION:           "ERROR_NO_PERMISSION",
	nvml.ERROR_ALREADY_INITIALIZED:     "ERROR_ALREADY_INITIALIZED",
	nvml.ERROR_NOT_FOUND:               "ERROR_NOT_FOUND",
	nvml.ERROR_INSUFFICIENT_SIZE:       "ERROR_INSUFFICIENT_SIZE",
	nvml.ERROR_INSUFFICIENT_POWER:      "ERROR_INSUFFICIENT_POWER",
	nvml.ERROR_DRIVER_NOT_LOADED:       "ERROR_DRIVER_NOT_LOADED",
	nvml.ERROR_TIMEOUT:                 "ERROR_TIMEOUT",
	nvml.ERROR_IRQ_ISSUE:               "ERROR_IRQ_ISSUE",
	nvml.ERROR_LIBRARY_NOT_FOUND:       "ERROR_LIBRARY_NOT_FOUND",
	nvml.ERROR_FUNCTION_NOT_FOUND:      "ERROR_FUNCTION_NOT_FOUND",
	nvml.ERROR_CORRUPTED_INFOROM:       "ERROR_CORRUPTED_INFOROM",
	nvml.ERROR_GPU_IS_LOST:             "ERROR_GPU_IS_LOST",
	nvml.ERROR_RESET_REQUIRED:          "ERROR_RESET_REQUIRED",
	nvml.ERROR_OPERATING_SYSTEM:        "ERROR_OPERATING_SYSTEM",
	nvml.ERROR_LIB_RM_VERSION_MISMATCH: "ERROR_LIB_RM_VERSION_MISMATCH",
	nvml.ERROR_IN_USE:                  "ERROR_IN_USE",
	nvml.ERROR_MEMORY:                  "ERROR_MEMORY",
	nvml.ERROR_NO_DATA:                 "ERROR_NO_DATA",
	nvml.ERROR_INSUFFICIENT_RESOURCES:  "ERROR_INSUFFICIENT_RESOURCES",
	nvml.ERROR_UNKNOWN:                 "ERROR_UNKNOWN",
}

var sentinels = map[nvml.Return]error{
	nvml.ERROR_NOT_SUPPORTED:          gpu.ErrNotSupported,
	nvml.ERROR_FUNCTION_NOT_FOUND:     gpu.ErrNotSupported,
	nvml.ERROR_GPU_IS_LOST:            gpu.ErrGPULost,
	nvml.ERROR_TIMEOUT:                gpu.ErrTimeout,
	nvml.ERROR_LIBRARY_NOT_FOUND:      gpu.ErrLibraryNotFound,
	nvml.ERROR_DRIVER_NOT_LOADED:      gpu.ErrDriverNotLoaded,
	nvml.ERROR_NO_PERMISSION:          gpu.ErrNoPermission,
	nvml.ERROR_INVALID_ARGUMENT:       gpu.ErrInvalidArgument,
	nvml.ERROR_NOT_FOUND:              gpu.ErrUnknownDevice,
	nvml.ERROR_INSUFFICIENT_RESOURCES: gpu.ErrInsufficientResources,
	nvml.ERROR_IN_USE:                 gpu.ErrInUse,
	nvml.ERROR_RESET_REQUIRED:         gpu.ErrResetRequired,
}

// toError converts an NVML return code into an error; SUCCESS becomes nil.
func toError(ret nvml.Return) error {
	if ret == nvml.SUCCESS {
		return nil
	}
	return &returnError{ret: ret, sentinel: sentinels[ret]}
}
