package nvmlbackend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	nvdevice "github.com/NVIDIA/go-nvlib/pkg/nvlib/device"
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// profileNamer names MIG profiles exactly as NVIDIA's tools do; it needs no
// library handle for that.
var profileNamer = nvdevice.New(nil)

func profileName(giProfileID, ciProfileID int, migMemMB, totalMemBytes uint64) (string, error) {
	p, err := profileNamer.NewMigProfile(giProfileID, ciProfileID, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, migMemMB, totalMemBytes)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

// fullComputeProfile is the compute-instance profile spanning a GPU instance of n slices.
func fullComputeProfile(slices uint32) (int, error) {
	switch slices {
	case 1:
		return nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nil
	case 2:
		return nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, nil
	case 3:
		return nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, nil
	case 4:
		return nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, nil
	case 6:
		return nvml.COMPUTE_INSTANCE_PROFILE_6_SLICE, nil
	case 7:
		return nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE, nil
	case 8:
		return nvml.COMPUTE_INSTANCE_PROFILE_8_SLICE, nil
	}
	return 0, fmt.Errorf("no compute instance profile spans %d slices", slices)
}

// migProfile pairs the public description with NVML's profile info.
type migProfile struct {
	gpu.MIGProfileInfo
	nvmlInfo nvml.GpuInstanceProfileInfo
}

// MIGProfiles lists the GPU-instance profiles GPU index offers, ordered by
// slice count then name, each with its legal placements on an empty GPU.
func (b *Backend) MIGProfiles(ctx context.Context, index int) ([]gpu.MIGProfileInfo, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	d, err := b.device(index)
	if err != nil {
		return nil, err
	}
	ps, err := b.migProfiles(d, index)
	if err != nil {
		return nil, err
	}
	out := make([]gpu.MIGProfileInfo, len(ps))
	for i, p := range ps {
		out[i] = p.MIGProfileInfo
	}
	return out, nil
}

func (b *Backend) migProfiles(d nvml.Device, index int) ([]migProfile, error) {
	if _, _, ret := d.GetMigMode(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu %d is not mig capable: %w", index, toError(ret))
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("reading memory of gpu %d: %w", index, toError(ret))
	}
	var out []migProfile
	for id := range nvml.GPU_INSTANCE_PROFILE_COUNT {
		info, ret := d.GetGpuInstanceProfileInfo(id)
		if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue
		}
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("reading mig profile %d of gpu %d: %w", id, index, toError(ret))
		}
		ci, err := fullComputeProfile(info.SliceCount)
		if err != nil {
			return nil, fmt.Errorf("mig profile %d of gpu %d: %w", id, index, err)
		}
		name, err := profileName(id, ci, info.MemorySizeMB, mem.Total)
		if err != nil {
			return nil, fmt.Errorf("naming mig profile %d of gpu %d: %w", id, index, err)
		}
		placements, ret := d.GetGpuInstancePossiblePlacements(&info)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("reading placements of %s on gpu %d: %w", name, index, toError(ret))
		}
		p := migProfile{nvmlInfo: info, MIGProfileInfo: gpu.MIGProfileInfo{
			Name:                name,
			NVMLProfileID:       id,
			SliceCount:          int(info.SliceCount),
			MemoryMiB:           info.MemorySizeMB,
			MultiprocessorCount: int(info.MultiprocessorCount),
			MaxInstances:        int(info.InstanceCount),
		}}
		for _, pl := range placements {
			p.Placements = append(p.Placements, gpu.Placement{Start: int(pl.Start), Size: int(pl.Size)})
		}
		slices.SortFunc(p.Placements, func(a, b gpu.Placement) int { return a.Start - b.Start })
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("gpu %d offers no mig profiles: %w", index, gpu.ErrNotSupported)
	}
	slices.SortStableFunc(out, func(a, b migProfile) int {
		if a.SliceCount != b.SliceCount {
			return a.SliceCount - b.SliceCount
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// lockForMIG takes the machine's MIG lock and returns GPU index's handle; the
// caller runs unlock when its change is done.
func (b *Backend) lockForMIG(ctx context.Context, index int) (nvml.Device, func(), error) {
	if err := ctxErr(ctx); err != nil {
		return nil, nil, err
	}
	b.migMu.Lock()
	d, err := b.device(index)
	if err != nil {
		b.migMu.Unlock()
		return nil, nil, err
	}
	return d, b.migMu.Unlock, nil
}

// SetMIGMode enables or disables MIG on GPU index. When the driver accepts the
// change but it waits for a GPU reset, the error wraps gpu.ErrResetRequired.
func (b *Backend) SetMIGMode(ctx context.Context, index int, enabled bool) error {
	d, unlock, err := b.lockForMIG(ctx, index)
	if err != nil {
		return err
	}
	defer unlock()
	mode := nvml.DEVICE_MIG_DISABLE
	if enabled {
		mode = nvml.DEVICE_MIG_ENABLE
	}
	what := map[bool]string{true: "enabling", false: "disabling"}[enabled]
	if _, ret := d.SetMigMode(mode); ret != nvml.SUCCESS {
		return fmt.Errorf("%s mig on gpu %d: %w", what, index, toError(ret))
	}
	current, pending, ret := d.GetMigMode()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("reading mig mode of gpu %d after %s it: %w", index, what, toError(ret))
	}
	if current != mode {
		if pending == mode {
			return fmt.Errorf("%s mig on gpu %d: %w", what, index, gpu.ErrResetRequired)
		}
		return fmt.Errorf("%s mig on gpu %d: the driver accepted the change but mig mode is still %d", what, index, current)
	}
	return nil
}

// CreateMIGDevice creates a GPU instance of the named profile at placement
// start on GPU index, with one compute instance spanning it. If the compute
// instance cannot be created the GPU instance is destroyed again.
func (b *Backend) CreateMIGDevice(ctx context.Context, index int, profile string, start int) (gpu.MIGDevice, error) {
	d, unlock, err := b.lockForMIG(ctx, index)
	if err != nil {
		return gpu.MIGDevice{}, err
	}
	defer unlock()
	profiles, err := b.migProfiles(d, index)
	if err != nil {
		return gpu.MIGDevice{}, err
	}
	i := slices.IndexFunc(profiles, func(p migProfile) bool { return p.Name == profile })
	if i < 0 {
		names := make([]string, len(profiles))
		for k, p := range profiles {
			names[k] = p.Name
		}
		return gpu.MIGDevice{}, fmt.Errorf("creating mig device %q on gpu %d: %w (this gpu offers: %s)",
			profile, index, gpu.ErrUnknownProfile, strings.Join(names, ", "))
	}
	p := profiles[i]
	pi := slices.IndexFunc(p.Placements, func(pl gpu.Placement) bool { return pl.Start == start })
	if pi < 0 {
		starts := make([]string, len(p.Placements))
		for k, pl := range p.Placements {
			starts[k] = fmt.Sprint(pl.Start)
		}
		return gpu.MIGDevice{}, fmt.Errorf("creating mig device %s on gpu %d: placement start %d is not legal for this profile (legal starts: %s): %w",
			profile, index, start, strings.Join(starts, ", "), gpu.ErrInvalidArgument)
	}
	placement := nvml.GpuInstancePlacement{Start: uint32(start), Size: uint32(p.Placements[pi].Size)}
	info := p.nvmlInfo
	gi, ret := d.CreateGpuInstanceWithPlacement(&info, &placement)
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, fmt.Errorf("creating gpu instance %s at %d on gpu %d: %w", profile, start, index, toError(ret))
	}
	giInfo, ret := gi.GetInfo()
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, errors.Join(
			fmt.Errorf("reading new gpu instance %s on gpu %d: %w", profile, index, toError(ret)),
			destroyGI(gi))
	}
	ciProfileID, err := fullComputeProfile(info.SliceCount)
	if err != nil {
		return gpu.MIGDevice{}, errors.Join(err, destroyGI(gi))
	}
	ciInfo, ret := gi.GetComputeInstanceProfileInfo(ciProfileID, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, errors.Join(
			fmt.Errorf("reading compute instance profile for %s on gpu %d: %w", profile, index, toError(ret)),
			destroyGI(gi))
	}
	ci, ret := gi.CreateComputeInstance(&ciInfo)
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, errors.Join(
			fmt.Errorf("creating compute instance in gpu instance %d (%s) on gpu %d: %w", giInfo.Id, profile, index, toError(ret)),
			destroyGI(gi))
	}
	cInfo, ret := ci.GetInfo()
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, fmt.Errorf("reading new compute instance on gpu %d: %w", index, toError(ret))
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return gpu.MIGDevice{}, fmt.Errorf("reading memory of gpu %d: %w", index, toError(ret))
	}
	handles, err := migHandles(d)
	if err != nil {
		return gpu.MIGDevice{}, fmt.Errorf("listing mig devices of gpu %d: %w", index, err)
	}
	for _, h := range handles {
		giID, r1 := h.GetGpuInstanceId()
		ciID, r2 := h.GetComputeInstanceId()
		if r1 == nvml.SUCCESS && r2 == nvml.SUCCESS && giID == int(giInfo.Id) && ciID == int(cInfo.Id) {
			return describeMIG(d, h, index, mem.Total)
		}
	}
	return gpu.MIGDevice{}, fmt.Errorf("created gpu instance %d (%s) on gpu %d but no mig device handle shows it", giInfo.Id, profile, index)
}

// destroyGI destroys a GPU instance and its compute instances, for rollback.
func destroyGI(gi nvml.GpuInstance) error {
	if err := destroyComputeInstances(gi); err != nil {
		return err
	}
	if ret := gi.Destroy(); ret != nvml.SUCCESS {
		return fmt.Errorf("destroying gpu instance: %w", toError(ret))
	}
	return nil
}

func destroyComputeInstances(gi nvml.GpuInstance) error {
	for id := range nvml.COMPUTE_INSTANCE_PROFILE_COUNT {
		info, ret := gi.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue
		}
		if ret != nvml.SUCCESS {
			return fmt.Errorf("reading compute instance profile %d: %w", id, toError(ret))
		}
		cis, ret := gi.GetComputeInstances(&info)
		if ret != nvml.SUCCESS {
			return fmt.Errorf("listing compute instances of profile %d: %w", id, toError(ret))
		}
		for _, ci := range cis {
			if ret := ci.Destroy(); ret != nvml.SUCCESS {
				return fmt.Errorf("destroying compute instance: %w", toError(ret))
			}
		}
	}
	return nil
}

// DestroyMIGDevice destroys GPU instance gpuInstanceID on GPU index, with its compute instances.
func (b *Backend) DestroyMIGDevice(ctx context.Context, index int, gpuInstanceID int) error {
	d, unlock, err := b.lockForMIG(ctx, index)
	if err != nil {
		return err
	}
	defer unlock()
	gi, ret := d.GetGpuInstanceById(gpuInstanceID)
	if ret != nvml.SUCCESS {
		err := toError(ret)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			err = fmt.Errorf("%w: %w", gpu.ErrUnknownDevice, err)
		}
		return fmt.Errorf("getting gpu instance %d on gpu %d: %w", gpuInstanceID, index, err)
	}
	if err := destroyGI(gi); err != nil {
		return fmt.Errorf("destroying gpu instance %d on gpu %d: %w", gpuInstanceID, index, err)
	}
	return nil
}
