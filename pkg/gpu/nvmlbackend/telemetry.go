package nvmlbackend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

const mib = 1 << 20

// noInstance is NVML's "not in a MIG instance" id.
const noInstance = math.MaxUint32

// Sample reads telemetry from every GPU. A GPU that cannot be read carries the
// reason in DeviceTelemetry.Err; the others are still sampled. Readings a GPU
// does not support are left absent.
func (b *Backend) Sample(ctx context.Context) (*gpu.Snapshot, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	b.sampleMu.Lock()
	defer b.sampleMu.Unlock()
	count, ret := b.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("counting gpus: %w", toError(ret))
	}
	snap := &gpu.Snapshot{Time: b.clock.Now(), Devices: make([]gpu.DeviceTelemetry, count)}
	b.gpm.beginPass()
	for i := range count {
		t := &snap.Devices[i]
		t.Index = i
		d, err := b.device(i)
		if err != nil {
			t.Err = err
			continue
		}
		r := reader{b: b, d: d, t: t}
		for _, step := range sampleSteps {
			if r.lost {
				break
			}
			step(&r)
		}
		if len(r.errs) > 0 {
			t.Err = fmt.Errorf("sampling gpu %d (%s): %w", i, t.UUID, errors.Join(r.errs...))
		}
	}
	b.gpm.endPass()
	return snap, nil
}

// reader samples one GPU, collecting errors other than "not supported" and
// stopping once the GPU is lost.
type reader struct {
	b      *Backend
	d      nvml.Device
	t      *gpu.DeviceTelemetry
	errs   []error
	lost   bool
	migOn  bool
	totMem uint64
}

// ok reports whether a read succeeded; unsupported reads are silently absent.
func (r *reader) ok(what string, ret nvml.Return) bool {
	switch ret {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		return false
	case nvml.ERROR_GPU_IS_LOST:
		r.lost = true
	}
	r.errs = append(r.errs, fmt.Errorf("reading %s: %w", what, toError(ret)))
	return false
}

var sampleSteps = []func(*reader){
	(*reader).identity,
	(*reader).utilization,
	(*reader).memory,
	(*reader).thermalsAndPower,
	(*reader).clocks,
	(*reader).errorCounters,
	(*reader).fieldValues,
	(*reader).processes,
	(*reader).profiling,
}

func (r *reader) identity() {
	uuid, ret := r.d.GetUUID()
	if r.ok("uuid", ret) {
		r.t.UUID = uuid
	}
	cur, _, ret := r.d.GetMigMode()
	if ret == nvml.SUCCESS {
		r.migOn = cur == nvml.DEVICE_MIG_ENABLE
	} else {
		r.ok("mig mode", ret)
	}
}

func (r *reader) utilization() {
	if r.migOn {
		// NVML reports no whole-GPU utilisation while MIG is enabled.
		return
	}
	if u, ret := r.d.GetUtilizationRates(); r.ok("utilization", ret) {
		r.t.GPUUtilPercent = gpu.Some(u.Gpu)
		r.t.MemCopyUtilPercent = gpu.Some(u.Memory)
	}
	if u, _, ret := r.d.GetEncoderUtilization(); r.ok("encoder utilization", ret) {
		r.t.EncUtilPercent = gpu.Some(u)
	}
	if u, _, ret := r.d.GetDecoderUtilization(); r.ok("decoder utilization", ret) {
		r.t.DecUtilPercent = gpu.Some(u)
	}
}

func (r *reader) memory() {
	m, ret := r.d.GetMemoryInfo_v2()
	if ret == nvml.SUCCESS {
		r.totMem = m.Total
		r.t.FBTotalMiB = gpu.Some(m.Total / mib)
		r.t.FBUsedMiB = gpu.Some(m.Used / mib)
		r.t.FBFreeMiB = gpu.Some(m.Free / mib)
		r.t.FBReservedMiB = gpu.Some(m.Reserved / mib)
		return
	}
	if ret != nvml.ERROR_NOT_SUPPORTED && ret != nvml.ERROR_FUNCTION_NOT_FOUND {
		r.ok("memory info", ret)
		return
	}
	if m, ret := r.d.GetMemoryInfo(); r.ok("memory info", ret) {
		r.totMem = m.Total
		r.t.FBTotalMiB = gpu.Some(m.Total / mib)
		r.t.FBUsedMiB = gpu.Some(m.Used / mib)
		r.t.FBFreeMiB = gpu.Some(m.Free / mib)
	}
}

func (r *reader) thermalsAndPower() {
	if v, ret := r.d.GetTemperature(nvml.TEMPERATURE_GPU); r.ok("temperature", ret) {
		r.t.GPUTempC = gpu.Some(v)
	}
	if v, ret := r.d.GetPowerUsage(); r.ok("power usage", ret) {
		r.t.PowerWatts = gpu.Some(float64(v) / 1000)
	}
	if v, ret := r.d.GetTotalEnergyConsumption(); r.ok("energy consumption", ret) {
		r.t.EnergyMilliJoules = gpu.Some(v)
	}
}

func (r *reader) clocks() {
	if v, ret := r.d.GetClockInfo(nvml.CLOCK_SM); r.ok("sm clock", ret) {
		r.t.SMClockMHz = gpu.Some(v)
	}
	if v, ret := r.d.GetClockInfo(nvml.CLOCK_MEM); r.ok("memory clock", ret) {
		r.t.MemClockMHz = gpu.Some(v)
	}
	if v, ret := r.d.GetCurrentClocksEventReasons(); r.ok("clock event reasons", ret) {
		r.t.ThrottleReasons = gpu.Some(v)
	}
}

func (r *reader) errorCounters() {
	if v, ret := r.d.GetPcieReplayCounter(); r.ok("pcie replay counter", ret) {
		r.t.PCIeReplays = gpu.Some(uint64(v))
	}
	ecc := []struct {
		what string
		typ  nvml.MemoryErrorType
		cnt  nvml.EccCounterType
		dst  *gpu.Opt[uint64]
	}{
		{"volatile corrected ecc errors", nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC, &r.t.ECCCorrectedVolatile},
		{"volatile uncorrected ecc errors", nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC, &r.t.ECCUncorrectedVolatile},
		{"aggregate corrected ecc errors", nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.AGGREGATE_ECC, &r.t.ECCCorrectedAggregate},
		{"aggregate uncorrected ecc errors", nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC, &r.t.ECCUncorrectedAggregate},
	}
	for _, e := range ecc {
		v, ret := r.d.GetTotalEccErrors(e.typ, e.cnt)
		if ret == nvml.ERROR_NOT_SUPPORTED {
			break // ECC is off or absent: none of the counters exist
		}
		if r.ok(e.what, ret) {
			*e.dst = gpu.Some(v)
		}
		if r.lost {
			return
		}
	}
	if corr, unc, pending, failed, ret := r.d.GetRemappedRows(); r.ok("remapped rows", ret) {
		r.t.RemappedRowsCorrectable = gpu.Some(uint64(corr))
		r.t.RemappedRowsUncorrectable = gpu.Some(uint64(unc))
		r.t.RowRemapPending = gpu.Some(pending)
		r.t.RowRemapFailure = gpu.Some(failed)
	}
}

func (r *reader) fieldValues() {
	vals := [3]nvml.FieldValue{
		{FieldId: nvml.FI_DEV_MEMORY_TEMP},
		{FieldId: nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ScopeId: math.MaxUint32},
		{FieldId: nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ScopeId: math.MaxUint32},
	}
	if !r.ok("field values", r.d.GetFieldValues(vals[:])) {
		return
	}
	if v, ok := fieldUint(&vals[0]); ok {
		r.t.MemoryTempC = gpu.Some(uint32(v))
	}
	if v, ok := fieldUint(&vals[1]); ok {
		r.t.NVLinkTxKiB = gpu.Some(v)
	}
	if v, ok := fieldUint(&vals[2]); ok {
		r.t.NVLinkRxKiB = gpu.Some(v)
	}
}

// fieldUint decodes an integer field value; ok is false when the field is
// unsupported or not an integer.
func fieldUint(f *nvml.FieldValue) (uint64, bool) {
	if nvml.Return(f.NvmlReturn) != nvml.SUCCESS {
		return 0, false
	}
	switch nvml.ValueType(f.ValueType) {
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return uint64(binary.NativeEndian.Uint32(f.Value[:4])), true
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return binary.NativeEndian.Uint64(f.Value[:]), true
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		v := int64(binary.NativeEndian.Uint64(f.Value[:]))
		return uint64(max(v, 0)), true
	case nvml.VALUE_TYPE_SIGNED_INT:
		v := int32(binary.NativeEndian.Uint32(f.Value[:4]))
		return uint64(max(v, 0)), true
	case nvml.VALUE_TYPE_DOUBLE:
		v := math.Float64frombits(binary.NativeEndian.Uint64(f.Value[:]))
		return uint64(max(v, 0)), true
	}
	return 0, false
}

func (r *reader) processes() {
	ps, ret := r.d.GetComputeRunningProcesses()
	if !r.ok("running processes", ret) {
		return
	}
	r.t.Processes = make([]gpu.Process, len(ps))
	for i, p := range ps {
		gi := -1
		if p.GpuInstanceId != noInstance {
			gi = int(p.GpuInstanceId)
		}
		r.t.Processes[i] = gpu.Process{PID: p.Pid, UsedMemoryMiB: p.UsedGpuMemory / mib, GPUInstanceID: gi}
	}
	if !r.migOn && len(ps) > 0 {
		r.processUtilization()
	}
}

// processUtilization adds NVML's per-process utilisation samples taken since
// the previous pass (averaged per process) to the processes just read. NVML
// keeps a short buffer of samples per GPU and returns those newer than the
// timestamp it is given; ERROR_NOT_FOUND means none are, so every process
// was idle. In MIG mode NVML does not sample processes.
func (r *reader) processUtilization() {
	last := r.b.procUtilSeen[r.t.UUID]
	samples, ret := r.d.GetProcessUtilization(last)
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND:
		samples = nil
	default:
		r.ok("process utilization", ret)
		return
	}
	type acc struct{ sm, mem, n uint64 }
	byPID := make(map[uint32]acc, len(samples))
	for _, s := range samples {
		if s.TimeStamp <= last {
			continue
		}
		a := byPID[s.Pid]
		a.sm += uint64(min(s.SmUtil, 100))
		a.mem += uint64(min(s.MemUtil, 100))
		a.n++
		byPID[s.Pid] = a
		r.b.procUtilSeen[r.t.UUID] = max(r.b.procUtilSeen[r.t.UUID], s.TimeStamp)
	}
	for i := range r.t.Processes {
		p := &r.t.Processes[i]
		a := byPID[p.PID]
		var sm, mem uint32
		if a.n > 0 {
			sm, mem = uint32((a.sm+a.n/2)/a.n), uint32((a.mem+a.n/2)/a.n)
		}
		p.SMUtilPercent, p.MemUtilPercent = gpu.Some(sm), gpu.Some(mem)
	}
}

// profiling reads GPM metrics for the GPU, or per MIG instance when MIG is on.
func (r *reader) profiling() {
	supported := r.b.gpm.supported(r.d, r.t.UUID)
	if !r.migOn {
		if supported {
			r.t.GPM = r.b.gpmRead(r, gpmKey{uuid: r.t.UUID, gi: -1}, func(s nvml.GpmSample) nvml.Return {
				return r.d.GpmSampleGet(s)
			})
		}
		return
	}
	handles, err := migHandles(r.d)
	if err != nil {
		if errors.Is(err, gpu.ErrGPULost) {
			r.lost = true
		}
		r.errs = append(r.errs, err)
		return
	}
	r.t.MIG = make([]gpu.MIGTelemetry, 0, len(handles))
	for _, h := range handles {
		var m gpu.MIGTelemetry
		var ret nvml.Return
		if m.UUID, ret = h.GetUUID(); !r.ok("mig device uuid", ret) {
			continue
		}
		if m.GPUInstanceID, ret = h.GetGpuInstanceId(); !r.ok("mig gpu instance id", ret) {
			continue
		}
		if mem, ret := h.GetMemoryInfo(); r.ok("mig memory info", ret) {
			m.FBTotalMiB = gpu.Some(mem.Total / mib)
			m.FBUsedMiB = gpu.Some(mem.Used / mib)
		}
		if supported {
			gi := m.GPUInstanceID
			m.GPM = r.b.gpmRead(r, gpmKey{uuid: r.t.UUID, gi: gi}, func(s nvml.GpmSample) nvml.Return {
				return r.d.GpmMigSampleGet(gi, s)
			})
		}
		r.t.MIG = append(r.t.MIG, m)
	}
}
