package gpu

import "time"

// Opt is an optional reading: Valid is false when the GPU lacks the counter,
// so that exporters leave the series out instead of inventing a zero.
type Opt[T any] struct {
	Val   T
	Valid bool
}

// Some returns a valid reading.
func Some[T any](v T) Opt[T] { return Opt[T]{Val: v, Valid: true} }

// Snapshot is one telemetry pass over every device of a machine.
type Snapshot struct {
	Time    time.Time
	Devices []DeviceTelemetry
}

// DeviceTelemetry holds one GPU's readings. Err is set when the device could not
// be read at all (for example ErrGPULost); the other GPUs are still sampled.
type DeviceTelemetry struct {
	Index int
	UUID  string
	Err   error `json:"-"`

	GPUUtilPercent     Opt[uint32]
	MemCopyUtilPercent Opt[uint32]
	EncUtilPercent     Opt[uint32]
	DecUtilPercent     Opt[uint32]

	FBTotalMiB    Opt[uint64]
	FBUsedMiB     Opt[uint64]
	FBFreeMiB     Opt[uint64]
	FBReservedMiB Opt[uint64]

	GPUTempC    Opt[uint32]
	MemoryTempC Opt[uint32]
	PowerWatts  Opt[float64]
	// EnergyMilliJoules is the total energy since the driver was loaded.
	EnergyMilliJoules Opt[uint64]
	SMClockMHz        Opt[uint32]
	MemClockMHz       Opt[uint32]

	PCIeReplays Opt[uint64]
	// ECC error counts, volatile (since the last driver load) and aggregate (lifetime).
	ECCCorrectedVolatile      Opt[uint64]
	ECCUncorrectedVolatile    Opt[uint64]
	ECCCorrectedAggregate     Opt[uint64]
	ECCUncorrectedAggregate   Opt[uint64]
	RemappedRowsCorrectable   Opt[uint64]
	RemappedRowsUncorrectable Opt[uint64]
	RowRemapPending           Opt[bool]
	RowRemapFailure           Opt[bool]

	// NVLink throughput counters summed over all links, in KiB since driver load.
	NVLinkTxKiB Opt[uint64]
	NVLinkRxKiB Opt[uint64]

	// ThrottleReasons is NVML's clocks-event-reasons bit mask.
	ThrottleReasons Opt[uint64]

	Processes []Process

	// GPM (Hopper and newer): ratios in [0,1] and bytes per second over the
	// interval since the previous snapshot. Absent on older GPUs and on the first
	// snapshot after start. Empty when MIG is enabled: see MIG.
	GPM GPMReadings
	// MIG holds per-MIG-instance GPM readings keyed by GPU instance ID.
	MIG []MIGTelemetry
}

// GPMReadings are the profiling metrics dcgm-exporter publishes as DCGM_FI_PROF_*.
// Each reading is absent where the GPU (or the first snapshot) cannot give it.
type GPMReadings struct {
	GraphicsActive  Opt[float64] // DCGM_FI_PROF_GR_ENGINE_ACTIVE, ratio
	SMActive        Opt[float64] // DCGM_FI_PROF_SM_ACTIVE, ratio
	TensorActive    Opt[float64] // DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, ratio
	DRAMActive      Opt[float64] // DCGM_FI_PROF_DRAM_ACTIVE, ratio
	PCIeTxBytesPerS Opt[float64] // DCGM_FI_PROF_PCIE_TX_BYTES
	PCIeRxBytesPerS Opt[float64] // DCGM_FI_PROF_PCIE_RX_BYTES
}

// MIGTelemetry holds one MIG instance's readings.
type MIGTelemetry struct {
	GPUInstanceID int
	UUID          string
	FBUsedMiB     Opt[uint64]
	FBTotalMiB    Opt[uint64]
	GPM           GPMReadings
}

// Process is a compute process using a GPU (or a MIG instance of it). PID is
// the host's PID (the driver's view), not one of a container's namespace.
type Process struct {
	PID           uint32
	UsedMemoryMiB uint64
	// GPUInstanceID is set for processes inside a MIG instance; -1 otherwise.
	GPUInstanceID int
	// SMUtilPercent and MemUtilPercent are NVML's per-process utilisation
	// samples (nvmlDeviceGetProcessUtilization) since the previous snapshot,
	// averaged: the percentage of time one of the process's kernels ran, and
	// of time its memory was read or written. Absent where NVML does not
	// sample processes (MIG mode, GPUs before Maxwell, vGPU guests); 0 for a
	// process with no sample in the interval (it was idle).
	SMUtilPercent  Opt[uint32]
	MemUtilPercent Opt[uint32]
}
