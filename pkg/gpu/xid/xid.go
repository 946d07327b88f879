// Package xid is Tessera's catalogue of NVIDIA XID error codes: what an XID
// means, which XIDs an application causes (and which the GPU survives), and
// which one says a GPU fell off the bus. It is GPU knowledge shared by the
// health state machine (pkg/deviceplugin/health), telemetry and the node
// inventory.
//
// It holds data only: it must not talk to NVML, Kubernetes or the kubelet, and
// it decides no policy (which XIDs make a GPU unhealthy is the health
// package's Policy, built from these defaults).
package xid

import "slices"

// FallenOffTheBus is XID 79: the GPU fell off the bus and stopped answering
// (NVML then returns GPU_IS_LOST for it). Only a reset brings it back.
const FallenOffTheBus uint64 = 79

// application are XIDs caused by an application, or contained to it, that
// leave the GPU usable for the next workload: NVIDIA's device plugin skips
// all but 94 when it decides health.
var application = []uint64{
	13,  // Graphics Engine Exception: usually an out-of-range access in a kernel
	31,  // GPU memory page fault: usually an illegal address in an application
	43,  // GPU stopped processing: the application's channel was reset
	45,  // Preemptive cleanup, due to previous errors: the driver ended the application's channels
	68,  // Video processor exception: NVDEC fault in the application's stream
	94,  // Contained ECC error: see below
	109, // Context Switch Timeout Error: the application's context did not yield
}

// XID 94 is the one that differs from NVIDIA's device plugin, which treats it
// as critical. NVIDIA's memory error management documentation says a
// contained uncorrectable error ends only the applications that touched the
// bad memory: other applications go on, new work can start, and the row is
// remapped at the next reset (the XID catalog's immediate action is to
// restart the application). The uncontained variant (95), row-remapping
// failure (64) and double-bit ECC events are not application XIDs.

// Application returns, in ascending order, the XIDs an application causes
// or that are contained to it: the GPU stays usable for the next workload.
func Application() []uint64 { return slices.Clone(application) }

// IsApplication reports whether xid is one of Application.
func IsApplication(xid uint64) bool { return slices.Contains(application, xid) }

// descriptions name the XIDs an operator meets most, after NVIDIA's XID catalog.
var descriptions = map[uint64]string{
	13:  "graphics engine exception",
	31:  "gpu memory page fault",
	32:  "invalid or corrupted push buffer stream",
	43:  "gpu stopped processing",
	45:  "preemptive cleanup, due to previous errors",
	48:  "double bit ecc error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ecc page retirement or row remapping recording event",
	64:  "ecc page retirement or row remapper recording failure",
	68:  "video processor exception",
	69:  "graphics engine class error",
	74:  "nvlink error",
	79:  "gpu has fallen off the bus",
	92:  "high single-bit ecc error rate",
	94:  "contained ecc error",
	95:  "uncontained ecc error",
	109: "context switch timeout error",
	119: "gsp rpc timeout",
	120: "gsp error",
}

// Description is a short description of an XID, or "" for one not listed.
func Description(xid uint64) string { return descriptions[xid] }
