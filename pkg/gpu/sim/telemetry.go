package sim

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Load is what runs on a GPU or GPU instance. Fractions are 0..1 of the time
// (or of the SMs) the unit was busy; rates are bytes per second.
type Load struct {
	SMActive, TensorActive, DRAMActive    float64
	MemCopyUtil, EncoderUtil, DecoderUtil float64
	PCIeTxBytesPerS, PCIeRxBytesPerS      float64
	NVLinkTxBytesPerS, NVLinkRxBytesPerS  float64
	Processes                             []Process
}

// Process is a compute process holding GPU memory.
type Process struct {
	PID           uint32
	UsedMemoryMiB uint64
	// SMUtil and MemUtil (0..1) are the process's own utilisation, which
	// GetProcessUtilization samples; they are independent of the Load's
	// SMActive (the GPU's), as a process's share of a time-sliced GPU is.
	SMUtil, MemUtil float64
	// Cgroup is the process's cgroup v2 path, as /proc/<pid>/cgroup
	// would show it ("/kubepods.slice/…/cri-containerd-<id>.scope"); empty
	// for a process in the root cgroup. Machine.ReadCgroup serves it.
	Cgroup string
	// GPUInstanceID and ComputeInstanceID place the process in a MIG
	// instance; -1 for a process on a whole GPU. SetLoad sets both to -1
	// (zero values are accepted). SetMIGLoad sets GPUInstanceID to its
	// instance (it must be -1, 0 or that instance) and keeps
	// ComputeInstanceID, where -1 means the instance's first compute
	// instance.
	GPUInstanceID, ComputeInstanceID int
}

// activity is the part of a Load that integrates over time.
type activity struct {
	gr, sm, tensor, dram, memCopy, enc, dec float64
	pcieTx, pcieRx, nvlTx, nvlRx            float64
}

func activityOf(l Load) activity {
	return activity{
		gr: max(l.SMActive, l.TensorActive), sm: l.SMActive, tensor: l.TensorActive, dram: l.DRAMActive,
		memCopy: l.MemCopyUtil, enc: l.EncoderUtil, dec: l.DecoderUtil,
		pcieTx: l.PCIeTxBytesPerS, pcieRx: l.PCIeRxBytesPerS, nvlTx: l.NVLinkTxBytesPerS, nvlRx: l.NVLinkRxBytesPerS,
	}
}

func (a activity) add(b activity, w float64) activity {
	return activity{
		gr: a.gr + w*b.gr, sm: a.sm + w*b.sm, tensor: a.tensor + w*b.tensor, dram: a.dram + w*b.dram,
		memCopy: a.memCopy + w*b.memCopy, enc: a.enc + w*b.enc, dec: a.dec + w*b.dec,
		pcieTx: a.pcieTx + b.pcieTx, pcieRx: a.pcieRx + b.pcieRx, nvlTx: a.nvlTx + b.nvlTx, nvlRx: a.nvlRx + b.nvlRx,
	}
}

func (a activity) clamped() activity {
	c := func(x float64) float64 { return min(x, 1) }
	a.gr, a.sm, a.tensor, a.dram = c(a.gr), c(a.sm), c(a.tensor), c(a.dram)
	a.memCopy, a.enc, a.dec = c(a.memCopy), c(a.enc), c(a.dec)
	return a
}

// busy is the fraction that drives power, temperature and clocks.
func (a activity) busy() float64 { return max(a.sm, a.tensor) }

// meter integrates activity (fraction-seconds, bytes) and energy (joules)
// over the machine's clock.
type meter struct {
	last    time.Time
	acc     activity
	energyJ float64
}

func (mt *meter) advance(now time.Time, a activity, powerW float64) {
	dt := now.Sub(mt.last).Seconds()
	if dt <= 0 {
		return
	}
	mt.acc = mt.acc.add(scale(a, dt), 1)
	mt.energyJ += powerW * dt
	mt.last = now
}

func scale(a activity, k float64) activity {
	return activity{
		gr: a.gr * k, sm: a.sm * k, tensor: a.tensor * k, dram: a.dram * k,
		memCopy: a.memCopy * k, enc: a.enc * k, dec: a.dec * k,
		pcieTx: a.pcieTx * k, pcieRx: a.pcieRx * k, nvlTx: a.nvlTx * k, nvlRx: a.nvlRx * k,
	}
}

// effective returns the GPU's activity: its whole-GPU load plus its GPU
// instances' loads weighted by their share of the compute slices.
func (d *device) effective() activity {
	a := activityOf(d.load)
	if d.model.mig != nil {
		for _, gi := range d.gis {
			a = a.add(activityOf(gi.load), float64(gi.info.SliceCount)/float64(d.model.mig.computeSlices))
		}
	}
	return a.clamped()
}

func (d *device) powerW(a activity) float64 {
	return d.model.idleW + (d.model.tdpW-d.model.idleW)*a.busy()
}

// advance integrates the GPU's and its GPU instances' activity up to now.
// The caller holds m.mu.
func (d *device) advance(now time.Time) {
	a := d.effective()
	for _, gi := range d.gis {
		gi.meter.advance(now, activityOf(gi.load).clamped(), 0)
	}
	d.meter.advance(now, a, d.powerW(a))
}

// processes returns every process on the GPU, whole-GPU ones first.
func (d *device) processes() []Process {
	ps := slices.Clone(d.load.Processes)
	for _, gi := range d.sortedGIs() {
		ps = append(ps, gi.load.Processes...)
	}
	return ps
}

func processMiB(ps []Process) uint64 {
	var sum uint64
	for _, p := range ps {
		sum += p.UsedMemoryMiB
	}
	return sum
}

// reservedMiB is the memory the driver reserves, about 0.6% of the total.
func (d *device) reservedMiB() uint64 { return d.model.memoryMiB * 6 / 1000 }

func validFraction(name string, x float64) error {
	if math.IsNaN(x) || x < 0 || x > 1 {
		return fmt.Errorf("%s must be within 0..1, got %v", name, x)
	}
	return nil
}

func (l Load) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"SMActive", l.SMActive}, {"TensorActive", l.TensorActive}, {"DRAMActive", l.DRAMActive},
		{"MemCopyUtil", l.MemCopyUtil}, {"EncoderUtil", l.EncoderUtil}, {"DecoderUtil", l.DecoderUtil}} {
		if err := validFraction(f.name, f.v); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"PCIeTxBytesPerS", l.PCIeTxBytesPerS}, {"PCIeRxBytesPerS", l.PCIeRxBytesPerS},
		{"NVLinkTxBytesPerS", l.NVLinkTxBytesPerS}, {"NVLinkRxBytesPerS", l.NVLinkRxBytesPerS}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("%s must be a non-negative rate, got %v", f.name, f.v)
		}
	}
	seen := map[uint32]bool{}
	for _, p := range l.Processes {
		if p.PID == 0 {
			return fmt.Errorf("process PID must not be 0")
		}
		if err := validFraction(fmt.Sprintf("process %d SMUtil", p.PID), p.SMUtil); err != nil {
			return err
		}
		if err := validFraction(fmt.Sprintf("process %d MemUtil", p.PID), p.MemUtil); err != nil {
			return err
		}
		if p.Cgroup != "" && !strings.HasPrefix(p.Cgroup, "/") {
			return fmt.Errorf("process %d Cgroup must be an absolute cgroup path, got %q", p.PID, p.Cgroup)
		}
		if seen[p.PID] {
			return fmt.Errorf("process %d listed twice", p.PID)
		}
		seen[p.PID] = true
	}
	return nil
}

// SetLoad sets the whole-GPU load of GPU gpu. Processes must not name MIG
// instances; on a GPU in MIG mode processes run in instances (SetMIGLoad).
func (m *Machine) SetLoad(gpu int, l Load) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	if err := l.validate(); err != nil {
		return fmt.Errorf("setting load of gpu %d: %w", gpu, err)
	}
	l.Processes = slices.Clone(l.Processes)
	for i := range l.Processes {
		p := &l.Processes[i]
		if p.GPUInstanceID > 0 || p.ComputeInstanceID > 0 {
			return fmt.Errorf("setting load of gpu %d: process %d names MIG instance %d/%d; use SetMIGLoad", gpu, p.PID, p.GPUInstanceID, p.ComputeInstanceID)
		}
		p.GPUInstanceID, p.ComputeInstanceID = -1, -1
	}
	if len(l.Processes) > 0 && d.migMode == nvml.DEVICE_MIG_ENABLE {
		return fmt.Errorf("setting load of gpu %d: the GPU is in MIG mode; processes run in MIG instances (use SetMIGLoad)", gpu)
	}
	others := uint64(0)
	for _, gi := range d.gis {
		others += processMiB(gi.load.Processes)
	}
	if used, usable := processMiB(l.Processes)+others, d.model.memoryMiB-d.reservedMiB(); used > usable {
		return fmt.Errorf("setting load of gpu %d: processes use %d MiB, the GPU has %d MiB usable", gpu, used, usable)
	}
	d.advance(m.clock.Now())
	d.load = l
	return nil
}

// SetMIGLoad sets the load of GPU instance gpuInstanceID on GPU gpu. Process
// memory counts against the instance's memory.
func (m *Machine) SetMIGLoad(gpu, gpuInstanceID int, l Load) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	gi, ok := d.gis[uint32(gpuInstanceID)]
	if !ok || gpuInstanceID < 0 {
		return fmt.Errorf("setting load of gpu %d instance %d: no such GPU instance (existing: %v)", gpu, gpuInstanceID, d.giIDs())
	}
	if err := l.validate(); err != nil {
		return fmt.Errorf("setting load of gpu %d instance %d: %w", gpu, gpuInstanceID, err)
	}
	l.Processes = slices.Clone(l.Processes)
	for i := range l.Processes {
		p := &l.Processes[i]
		if p.GPUInstanceID != -1 && p.GPUInstanceID != 0 && p.GPUInstanceID != gpuInstanceID {
			return fmt.Errorf("setting load of gpu %d instance %d: process %d names GPU instance %d", gpu, gpuInstanceID, p.PID, p.GPUInstanceID)
		}
		p.GPUInstanceID = gpuInstanceID
		if p.ComputeInstanceID == -1 {
			cis := gi.sortedCIs()
			if len(cis) == 0 {
				return fmt.Errorf("setting load of gpu %d instance %d: process %d needs a compute instance and the GPU instance has none", gpu, gpuInstanceID, p.PID)
			}
			p.ComputeInstanceID = int(cis[0].id)
		}
		if _, ok := gi.cis[uint32(p.ComputeInstanceID)]; !ok || p.ComputeInstanceID < 0 {
			return fmt.Errorf("setting load of gpu %d instance %d: process %d names compute instance %d, which does not exist", gpu, gpuInstanceID, p.PID, p.ComputeInstanceID)
		}
	}
	if used := processMiB(l.Processes); used > gi.info.MemorySizeMB {
		return fmt.Errorf("setting load of gpu %d instance %d: processes use %d MiB, the instance has %d MiB", gpu, gpuInstanceID, used, gi.info.MemorySizeMB)
	}
	d.advance(m.clock.Now())
	gi.load = l
	return nil
}

// GetMemoryInfo returns frame-buffer memory; Used includes the reserved memory.
func (d *device) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	r, unlock := d.begin("GetMemoryInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.Memory{}, r
	}
	total := d.model.memoryMiB << 20
	used := (d.reservedMiB() + processMiB(d.processes())) << 20
	return nvml.Memory{Total: total, Used: used, Free: total - used}, nvml.SUCCESS
}

// GetMemoryInfo_v2 returns frame-buffer memory with the reserved part apart.
func (d *device) GetMemoryInfo_v2() (nvml.Memory_v2, nvml.Return) {
	r, unlock := d.begin("GetMemoryInfo_v2")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.Memory_v2{}, r
	}
	total := d.model.memoryMiB << 20
	reserved := d.reservedMiB() << 20
	used := processMiB(d.processes()) << 20
	return nvml.Memory_v2{Version: nvml.STRUCT_VERSION(nvml.Memory_v2{}, 2), Total: total, Reserved: reserved, Used: used, Free: total - reserved - used}, nvml.SUCCESS
}

// GetUtilizationRates returns GPU (SM) and memory-copy utilisation in percent;
// ERROR_NOT_SUPPORTED in MIG mode, as on real GPUs.
func (d *device) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	r, unlock := d.begin("GetUtilizationRates")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.Utilization{}, r
	}
	if d.migMode == nvml.DEVICE_MIG_ENABLE {
		return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
	}
	a := d.effective()
	return nvml.Utilization{Gpu: percent(a.sm), Memory: percent(a.memCopy)}, nvml.SUCCESS
}

func percent(x float64) uint32 { return uint32(math.Round(x * 100)) }

// samplingPeriodUs is the period NVML reports for encoder/decoder utilisation.
const samplingPeriodUs = 167000

// GetEncoderUtilization returns encoder utilisation and the sampling period.
func (d *device) GetEncoderUtilization() (uint32, uint32, nvml.Return) {
	r, unlock := d.begin("GetEncoderUtilization")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	return percent(d.effective().enc), samplingPeriodUs, nvml.SUCCESS
}

// GetDecoderUtilization returns decoder utilisation and the sampling period.
func (d *device) GetDecoderUtilization() (uint32, uint32, nvml.Return) {
	r, unlock := d.begin("GetDecoderUtilization")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	return percent(d.effective().dec), samplingPeriodUs, nvml.SUCCESS
}

func (d *device) gpuTempC(a activity) float64 { return 30 + 50*a.busy() }
func (d *device) memTempC(a activity) float64 { return d.gpuTempC(a) + 3 + 4*a.dram }

// GetTemperature returns the GPU core temperature in °C, which follows power.
func (d *device) GetTemperature(sensor nvml.TemperatureSensors) (uint32, nvml.Return) {
	r, unlock := d.begin("GetTemperature")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	if sensor != nvml.TEMPERATURE_GPU {
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	return uint32(math.Round(d.gpuTempC(d.effective()))), nvml.SUCCESS
}

// GetPowerUsage returns the power draw in mW.
func (d *device) GetPowerUsage() (uint32, nvml.Return) {
	r, unlock := d.begin("GetPowerUsage")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return uint32(math.Round(d.powerW(d.effective()) * 1000)), nvml.SUCCESS
}

// GetTotalEnergyConsumption returns the energy used since the machine was
// created in mJ, integrated over the machine's clock.
func (d *device) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	r, unlock := d.begin("GetTotalEnergyConsumption")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	d.advance(d.m.clock.Now())
	return uint64(math.Round(d.meter.energyJ * 1000)), nvml.SUCCESS
}

func (d *device) clockMHz(t nvml.ClockType, current bool) (uint32, nvml.Return) {
	md := d.model
	a := d.effective()
	switch t {
	case nvml.CLOCK_GRAPHICS, nvml.CLOCK_SM:
		if !current {
			return md.smClockMax, nvml.SUCCESS
		}
		return md.smClockIdle + uint32(math.Round(float64(md.smClockMax-md.smClockIdle)*a.busy())), nvml.SUCCESS
	case nvml.CLOCK_MEM:
		if !current || a.busy() > 0 || a.dram > 0 {
			return md.memClockMax, nvml.SUCCESS
		}
		return md.memClockIdle, nvml.SUCCESS
	case nvml.CLOCK_VIDEO:
		maxVideo := md.smClockMax * 9 / 10
		if !current {
			return maxVideo, nvml.SUCCESS
		}
		return md.smClockIdle + uint32(math.Round(float64(maxVideo-md.smClockIdle)*max(a.busy(), a.enc, a.dec))), nvml.SUCCESS
	default:
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
}

// GetClockInfo returns the current clock in MHz; the SM clock rises from its
// idle value to its maximum with load.
func (d *device) GetClockInfo(t nvml.ClockType) (uint32, nvml.Return) {
	r, unlock := d.begin("GetClockInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.clockMHz(t, true)
}

// GetMaxClockInfo returns the maximum clock in MHz.
func (d *device) GetMaxClockInfo(t nvml.ClockType) (uint32, nvml.Return) {
	r, unlock := d.begin("GetMaxClockInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.clockMHz(t, false)
}

// highLoad is the busy fraction from which the GPU runs into its power cap.
const highLoad = 0.9

// GetCurrentClocksEventReasons returns why clocks are held back: GPU idle
// without load, software power cap at high load.
func (d *device) GetCurrentClocksEventReasons() (uint64, nvml.Return) {
	r, unlock := d.begin("GetCurrentClocksEventReasons")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.clocksEventReasons(), nvml.SUCCESS
}

// GetCurrentClocksThrottleReasons is the older name of GetCurrentClocksEventReasons.
func (d *device) GetCurrentClocksThrottleReasons() (uint64, nvml.Return) {
	r, unlock := d.begin("GetCurrentClocksThrottleReasons")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return d.clocksEventReasons(), nvml.SUCCESS
}

func (d *device) clocksEventReasons() uint64 {
	a := d.effective()
	switch {
	case a.busy() == 0 && len(d.processes()) == 0:
		return nvml.ClocksEventReasonGpuIdle
	case a.busy() >= highLoad:
		return nvml.ClocksEventReasonSwPowerCap
	default:
		return nvml.ClocksEventReasonNone
	}
}

// GetPcieThroughput returns PCIe throughput in KB/s.
func (d *device) GetPcieThroughput(counter nvml.PcieUtilCounter) (uint32, nvml.Return) {
	r, unlock := d.begin("GetPcieThroughput")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	a := d.effective()
	switch counter {
	case nvml.PCIE_UTIL_TX_BYTES:
		return uint32(a.pcieTx / 1024), nvml.SUCCESS
	case nvml.PCIE_UTIL_RX_BYTES:
		return uint32(a.pcieRx / 1024), nvml.SUCCESS
	default:
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
}

// GetComputeRunningProcesses lists the compute processes: on a GPU all of
// them, with GPU/compute instance IDs (0xFFFFFFFF outside MIG).
func (d *device) GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	r, unlock := d.begin("GetComputeRunningProcesses")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	return processInfos(d.processes()), nvml.SUCCESS
}

func processInfos(ps []Process) []nvml.ProcessInfo {
	out := make([]nvml.ProcessInfo, 0, len(ps))
	id := func(i int) uint32 {
		if i < 0 {
			return math.MaxUint32
		}
		return uint32(i)
	}
	for _, p := range ps {
		out = append(out, nvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.UsedMemoryMiB << 20,
			GpuInstanceId: id(p.GPUInstanceID), ComputeInstanceId: id(p.ComputeInstanceID)})
	}
	return out
}

// GetProcessUtilization returns one utilisation sample per whole-GPU
// process, stamped now (µs), when now is after lastSeenTimestamp; otherwise,
// or without processes, ERROR_NOT_FOUND (no samples newer than that), as
// NVML does. ERROR_NOT_SUPPORTED in MIG mode, where NVML does not sample
// processes.
func (d *device) GetProcessUtilization(lastSeenTimestamp uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
	r, unlock := d.begin("GetProcessUtilization")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	if d.migMode == nvml.DEVICE_MIG_ENABLE {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	now := uint64(d.m.clock.Now().UnixMicro())
	if len(d.load.Processes) == 0 || now <= lastSeenTimestamp {
		return nil, nvml.ERROR_NOT_FOUND
	}
	out := make([]nvml.ProcessUtilizationSample, 0, len(d.load.Processes))
	for _, p := range d.load.Processes {
		out = append(out, nvml.ProcessUtilizationSample{Pid: p.PID, TimeStamp: now,
			SmUtil: percent(p.SMUtil), MemUtil: percent(p.MemUtil)})
	}
	return out, nvml.SUCCESS
}

// ReadCgroup returns what /proc/<pid>/cgroup would hold for a process
// running on the machine ("0::<cgroup>\n", the cgroup v2 form), so that the
// owner of a simulated process can be resolved as a real one is. It returns
// an error wrapping fs.ErrNotExist for a PID that runs on no GPU.
func (m *Machine) ReadCgroup(pid uint32) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.devs {
		for _, p := range d.processes() {
			if p.PID != pid {
				continue
			}
			cg := p.Cgroup
			if cg == "" {
				cg = "/"
			}
			return []byte("0::" + cg + "\n"), nil
		}
	}
	return nil, fmt.Errorf("reading cgroup of pid %d: no such process on machine %s: %w", pid, m.name, fs.ErrNotExist)
}

// Field IDs the simulation answers in GetFieldValues.
var fieldAnswers = map[uint32]func(d *device, scope uint32) (nvml.ValueType, uint64, nvml.Return){
	nvml.FI_DEV_MEMORY_TEMP: func(d *device, _ uint32) (nvml.ValueType, uint64, nvml.Return) {
		return nvml.VALUE_TYPE_UNSIGNED_INT, uint64(math.Round(d.memTempC(d.effective()))), nvml.SUCCESS
	},
	nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX: func(d *device, scope uint32) (nvml.ValueType, uint64, nvml.Return) {
		return d.nvlinkKiB(scope, d.meter.acc.nvlTx, 1)
	},
	nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX: func(d *device, scope uint32) (nvml.ValueType, uint64, nvml.Return) {
		return d.nvlinkKiB(scope, d.meter.acc.nvlRx, 1)
	},
	// Raw counters add protocol overhead (about 6%) to the data.
	nvml.FI_DEV_NVLINK_THROUGHPUT_RAW_TX: func(d *device, scope uint32) (nvml.ValueType, uint64, nvml.Return) {
		return d.nvlinkKiB(scope, d.meter.acc.nvlTx, 1.06)
	},
	nvml.FI_DEV_NVLINK_THROUGHPUT_RAW_RX: func(d *device, scope uint32) (nvml.ValueType, uint64, nvml.Return) {
		return d.nvlinkKiB(scope, d.meter.acc.nvlRx, 1.06)
	},
	nvml.FI_DEV_NVLINK_LINK_COUNT: func(d *device, _ uint32) (nvml.ValueType, uint64, nvml.Return) {
		if d.model.nvlinks == 0 {
			return 0, 0, nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.VALUE_TYPE_UNSIGNED_INT, uint64(d.model.nvlinks), nvml.SUCCESS
	},
	nvml.FI_DEV_PCIE_REPLAY_COUNTER: func(d *device, _ uint32) (nvml.ValueType, uint64, nvml.Return) {
		return nvml.VALUE_TYPE_UNSIGNED_LONG_LONG, d.pcieReplays, nvml.SUCCESS
	},
}

// nvlinkKiB answers an NVLink throughput counter: scope is a link ID, or
// UINT_MAX for the sum over all links. Traffic spreads evenly over active links.
func (d *device) nvlinkKiB(scope uint32, bytes, factor float64) (nvml.ValueType, uint64, nvml.Return) {
	if d.model.nvlinks == 0 {
		return 0, 0, nvml.ERROR_NOT_SUPPORTED
	}
	total := bytes * factor / 1024
	switch {
	case scope == math.MaxUint32:
	case int(scope) >= d.model.nvlinks:
		return 0, 0, nvml.ERROR_INVALID_ARGUMENT
	case !d.nvswitch && d.bridgePeer == nil:
		total = 0
	default:
		total /= float64(d.model.nvlinks)
	}
	return nvml.VALUE_TYPE_UNSIGNED_LONG_LONG, uint64(total), nvml.SUCCESS
}

// GetFieldValues fills in the values of the requested fields. Fields the
// simulation does not model get NvmlReturn ERROR_NOT_SUPPORTED.
func (d *device) GetFieldValues(values []nvml.FieldValue) nvml.Return {
	r, unlock := d.begin("GetFieldValues")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return r
	}
	if len(values) == 0 {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	now := d.m.clock.Now()
	d.advance(now)
	for i := range values {
		v := &values[i]
		v.Timestamp = now.UnixMicro()
		v.LatencyUsec = 0
		v.Value = [8]byte{}
		answer, ok := fieldAnswers[v.FieldId]
		if !ok {
			v.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			continue
		}
		vt, x, ret := answer(d, v.ScopeId)
		v.NvmlReturn = uint32(ret)
		if ret != nvml.SUCCESS {
			continue
		}
		v.ValueType = uint32(vt)
		if vt == nvml.VALUE_TYPE_UNSIGNED_INT {
			binary.NativeEndian.PutUint32(v.Value[:4], uint32(x))
		} else {
			binary.NativeEndian.PutUint64(v.Value[:], x)
		}
	}
	return nvml.SUCCESS
}

// eccState holds ECC counters and row remapping.
type eccState struct {
	correctedVolatile, uncorrectedVolatile     uint64
	correctedAggregate, uncorrectedAggregate   uint64
	remappedCorrectable, remappedUncorrectable int
	remapPending                               int // uncorrectable rows waiting for a reset
}

func (e *eccState) reset() {
	e.correctedVolatile, e.uncorrectedVolatile = 0, 0
	e.remappedUncorrectable += e.remapPending
	e.remapPending = 0
}

// InjectECC records a single-bit (corrected) or double-bit (uncorrected)
// memory error on GPU gpu: the volatile and aggregate counters go up, event
// sets registered for the ECC event receive it, and a double-bit error marks
// a row remapping as pending until the next reset. It returns an error for a
// GPU without ECC.
func (m *Machine) InjectECC(gpu int, doubleBit bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	if !d.model.ecc {
		return fmt.Errorf("injecting ECC error on gpu %d: %s has no ECC", gpu, d.model.key)
	}
	if doubleBit {
		d.ecc.uncorrectedVolatile++
		d.ecc.uncorrectedAggregate++
		d.ecc.remapPending++
		d.emit(nvml.EventTypeDoubleBitEccError, 0, nil, nil)
	} else {
		d.ecc.correctedVolatile++
		d.ecc.correctedAggregate++
		d.emit(nvml.EventTypeSingleBitEccError, 0, nil, nil)
	}
	return nil
}

// InjectPCIeReplays adds n to GPU gpu's PCIe replay counter.
func (m *Machine) InjectPCIeReplays(gpu int, n uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.gpu(gpu)
	if err != nil {
		return err
	}
	d.pcieReplays += n
	return nil
}

// GetTotalEccErrors returns an ECC counter; ERROR_NOT_SUPPORTED without ECC.
func (d *device) GetTotalEccErrors(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
	r, unlock := d.begin("GetTotalEccErrors")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	if !d.model.ecc {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	e := d.ecc
	switch {
	case t == nvml.MEMORY_ERROR_TYPE_CORRECTED && c == nvml.VOLATILE_ECC:
		return e.correctedVolatile, nvml.SUCCESS
	case t == nvml.MEMORY_ERROR_TYPE_CORRECTED && c == nvml.AGGREGATE_ECC:
		return e.correctedAggregate, nvml.SUCCESS
	case t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED && c == nvml.VOLATILE_ECC:
		return e.uncorrectedVolatile, nvml.SUCCESS
	case t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED && c == nvml.AGGREGATE_ECC:
		return e.uncorrectedAggregate, nvml.SUCCESS
	default:
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
}

// GetRemappedRows returns remapped rows (correctable, uncorrectable), whether
// a remapping is pending and whether one ever failed. ERROR_NOT_SUPPORTED
// without ECC and on a MIG GPU with instances, as nvml.h documents.
func (d *device) GetRemappedRows() (int, int, bool, bool, nvml.Return) {
	r, unlock := d.begin("GetRemappedRows")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, false, false, r
	}
	if !d.model.ecc || (d.migMode == nvml.DEVICE_MIG_ENABLE && len(d.gis) > 0) {
		return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED
	}
	return d.ecc.remappedCorrectable, d.ecc.remappedUncorrectable, d.ecc.remapPending > 0, false, nvml.SUCCESS
}

// GetPcieReplayCounter returns the PCIe replay counter.
func (d *device) GetPcieReplayCounter() (int, nvml.Return) {
	r, unlock := d.begin("GetPcieReplayCounter")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return int(d.pcieReplays), nvml.SUCCESS
}
