package nvmlbackend

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Library is the part of go-nvml's nvml.Interface the backend uses at system
// level. Devices are reached through the nvml.Device handles it returns.
type Library interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	SystemGetNVMLVersion() (string, nvml.Return)
	SystemGetCudaDriverVersion() (int, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	EventSetCreate() (nvml.EventSet, nvml.Return)
	GpmSampleAlloc() (nvml.GpmSample, nvml.Return)
	GpmMetricsGet(*nvml.GpmMetricsGetType) nvml.Return
}

var _ gpu.Backend = (*Backend)(nil)

// Backend is the NVML-backed gpu.Backend. It is safe for concurrent use.
type Backend struct {
	lib   Library
	name  string
	clock clock.PassiveClock
	// eventWait is how long one EventSet.Wait blocks before WatchEvents checks ctx.
	eventWait     time.Duration
	numaFromSysfs func(busID string) (int, error)

	// migMu serialises MIG changes on the machine.
	migMu sync.Mutex

	// sampleMu guards the GPM state and the per-process utilisation
	// timestamps (GPU UUID → newest sample seen, in µs) kept between snapshots.
	sampleMu     sync.Mutex
	gpm          gpmState
	procUtilSeen map[string]uint64

	closeOnce sync.Once
	closeErr  error
}

// Option configures a Backend.
type Option func(*Backend)

// WithName sets the name Backend.Name reports (default "nvml").
func WithName(name string) Option { return func(b *Backend) { b.name = name } }

// WithClock injects the clock used for timestamps.
func WithClock(c clock.PassiveClock) Option { return func(b *Backend) { b.clock = c } }

// WithEventWait sets how long one NVML event wait blocks (default 500ms).
func WithEventWait(d time.Duration) Option { return func(b *Backend) { b.eventWait = d } }

// New initialises NVML through lib once and returns a backend over it. A
// missing libnvidia-ml yields an error wrapping gpu.ErrLibraryNotFound.
func New(lib Library, opts ...Option) (*Backend, error) {
	b := &Backend{
		lib:           lib,
		name:          "nvml",
		clock:         clock.RealClock{},
		eventWait:     500 * time.Millisecond,
		numaFromSysfs: readSysfsNUMANode,
		procUtilSeen:  map[string]uint64{},
	}
	for _, o := range opts {
		o(b)
	}
	if err := toError(lib.Init()); err != nil {
		return nil, fmt.Errorf("initialising nvml: %w", err)
	}
	return b, nil
}

var system struct {
	once sync.Once
	b    *Backend
	err  error
}

// System returns the process-wide backend over the real libnvidia-ml,
// initialising NVML on the first call only. Every later call returns the same
// backend (or the same error): NVML is initialised once per process.
func System() (*Backend, error) {
	system.once.Do(func() {
		system.b, system.err = New(nvml.New())
	})
	return system.b, system.err
}

// Name reports the backend's name.
func (b *Backend) Name() string { return b.name }

// Close shuts NVML down; later calls return the first result.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.sampleMu.Lock()
		b.gpm.free()
		b.sampleMu.Unlock()
		if err := toError(b.lib.Shutdown()); err != nil {
			b.closeErr = fmt.Errorf("shutting down nvml: %w", err)
		}
	})
	return b.closeErr
}

// device returns the handle of physical GPU index.
func (b *Backend) device(index int) (nvml.Device, error) {
	d, ret := b.lib.DeviceGetHandleByIndex(index)
	if err := toError(ret); err != nil {
		if ret == nvml.ERROR_INVALID_ARGUMENT {
			err = fmt.Errorf("%w: %w", gpu.ErrUnknownDevice, err)
		}
		return nil, fmt.Errorf("getting handle of gpu %d: %w", index, err)
	}
	return d, nil
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nvml backend: %w", err)
	}
	return nil
}
