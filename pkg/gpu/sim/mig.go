package sim

import (
	"maps"
	"slices"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// gpuInstance is a MIG GPU instance. It embeds go-nvml's mock GPU instance for
// the calls the simulation does not model (they answer ERROR_NOT_SUPPORTED).
type gpuInstance struct {
	*server.GpuInstance
	d         *device
	id        uint32
	profileID int
	info      nvml.GpuInstanceProfileInfo
	placement nvml.GpuInstancePlacement

	// Guarded by m.mu.
	destroyed bool
	cis       map[uint32]*computeInstance
	load      Load
	meter     meter
}

// computeInstance is a compute instance inside a GPU instance; each live one
// is a MIG device.
type computeInstance struct {
	*server.ComputeInstance
	gi        *gpuInstance
	id        uint32
	profileID int
	info      nvml.ComputeInstanceProfileInfo
	placement nvml.ComputeInstancePlacement
	handle    *migDevice
	destroyed bool // guarded by m.mu
}

// migDevice is the device handle of a MIG device (a compute instance).
type migDevice struct {
	*mock.Device
	ci   *computeInstance
	uuid string
}

var (
	_ nvml.GpuInstance     = (*gpuInstance)(nil)
	_ nvml.ComputeInstance = (*computeInstance)(nil)
	_ nvml.Device          = (*migDevice)(nil)
)

func (d *device) migCapable() bool { return d.model.mig != nil }
func (d *device) migEnabled() bool { return d.model.mig != nil && d.migMode == nvml.DEVICE_MIG_ENABLE }

func (d *device) sortedGIs() []*gpuInstance {
	return slices.SortedFunc(maps.Values(d.gis), func(a, b *gpuInstance) int { return int(a.id) - int(b.id) })
}

func (d *device) giIDs() []uint32 { return slices.Sorted(maps.Keys(d.gis)) }

func (gi *gpuInstance) sortedCIs() []*computeInstance {
	return slices.SortedFunc(maps.Values(gi.cis), func(a, b *computeInstance) int { return int(a.id) - int(b.id) })
}

// migHandles returns the MIG devices of the GPU in NVML's order: by GPU
// instance ID, then compute instance ID.
// The list is cached until the next MIG change (see migChanged), because
// GetMigDeviceHandleByIndex asks for it once per index.
func (d *device) migHandles() []*migDevice {
	if d.migCacheOK {
		return d.migCache
	}
	out := d.migCache[:0]
	for _, gi := range d.sortedGIs() {
		for _, ci := range gi.sortedCIs() {
			out = append(out, ci.handle)
		}
	}
	d.migCache, d.migCacheOK = out, true
	return out
}

// migChanged drops the cached MIG handle list; call it under the machine lock
// whenever a GPU or compute instance is created or destroyed.
func (d *device) migChanged() {
	clear(d.migCache)
	d.migCache, d.migCacheOK = d.migCache[:0], false
}

// invalidate marks a GPU instance and its compute instances destroyed.
func (gi *gpuInstance) invalidate() {
	gi.destroyed = true
	for _, ci := range gi.cis {
		ci.destroyed = true
	}
	clear(gi.cis)
	gi.d.migChanged()
	gi.load = Load{}
}

// GetMigMode returns the current and pending MIG mode.
func (d *device) GetMigMode() (int, int, nvml.Return) {
	r, unlock := d.begin("GetMigMode")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	if !d.migCapable() {
		return 0, 0, nvml.ERROR_NOT_SUPPORTED
	}
	return d.migMode, d.migPending, nvml.SUCCESS
}

// SetMigMode sets the pending MIG mode and activates it when it can. It
// returns (activationStatus, ret): ret ERROR_NOT_SUPPORTED on a GPU without
// MIG and ERROR_IN_USE when disabling with GPU instances present; activation
// ERROR_RESET_REQUIRED when the machine needs a reset for MIG changes
// (SetResetRequiredForMIG) and ERROR_IN_USE while processes run on the GPU;
// the mode then stays pending until ResetGPU. As in go-nvml, activationStatus
// is SUCCESS (unset) when ret is an error.
func (d *device) SetMigMode(mode int) (nvml.Return, nvml.Return) {
	r, unlock := d.begin("SetMigMode")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.SUCCESS, r
	}
	switch {
	case !d.migCapable():
		return nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED
	case mode != nvml.DEVICE_MIG_DISABLE && mode != nvml.DEVICE_MIG_ENABLE:
		return nvml.SUCCESS, nvml.ERROR_INVALID_ARGUMENT
	case mode == nvml.DEVICE_MIG_DISABLE && len(d.gis) > 0:
		return nvml.SUCCESS, nvml.ERROR_IN_USE
	}
	d.migPending = mode
	switch {
	case mode == d.migMode:
		return nvml.SUCCESS, nvml.SUCCESS
	case d.resetRequiredForMIG:
		return nvml.ERROR_RESET_REQUIRED, nvml.SUCCESS
	case len(d.load.Processes) > 0:
		return nvml.ERROR_IN_USE, nvml.SUCCESS
	}
	d.advance(d.m.clock.Now())
	d.migMode = mode
	return nvml.SUCCESS, nvml.SUCCESS
}

// GetGpuInstanceProfileInfo describes a GPU-instance profile, whatever the
// MIG mode.
func (d *device) GetGpuInstanceProfileInfo(profile int) (nvml.GpuInstanceProfileInfo, nvml.Return) {
	r, unlock := d.begin("GetGpuInstanceProfileInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.GpuInstanceProfileInfo{}, r
	}
	if profile < 0 || profile >= nvml.GPU_INSTANCE_PROFILE_COUNT {
		return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	if !d.migCapable() {
		return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_NOT_SUPPORTED
	}
	info, ok := d.model.mig.gi[profile]
	if !ok {
		return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_NOT_SUPPORTED
	}
	return info, nvml.SUCCESS
}

// GetGpuInstancePossiblePlacements lists every placement of a profile on an
// empty GPU, whatever the MIG mode.
func (d *device) GetGpuInstancePossiblePlacements(info *nvml.GpuInstanceProfileInfo) ([]nvml.GpuInstancePlacement, nvml.Return) {
	r, unlock := d.begin("GetGpuInstancePossiblePlacements")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case !d.migCapable():
		return nil, nvml.ERROR_NOT_SUPPORTED
	case info == nil:
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	p, ok := d.model.mig.giPlacements[int(info.Id)]
	if !ok {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	return slices.Clone(p), nvml.SUCCESS
}

// placedGI is a GPU instance that exists or is being planned.
type placedGI struct {
	profileID int
	slices    uint32
	placement nvml.GpuInstancePlacement
}

func (d *device) placedGIs() []placedGI {
	out := make([]placedGI, 0, len(d.gis))
	for _, gi := range d.gis {
		out = append(out, placedGI{gi.profileID, gi.info.SliceCount, gi.placement})
	}
	return out
}

// fitsGI reports whether a GPU instance of profileID fits at p next to
// existing: ERROR_INSUFFICIENT_RESOURCES when the profile's instance count is
// exhausted, the memory slices overlap or the compute slices run out.
func (d *device) fitsGI(profileID int, p nvml.GpuInstancePlacement, existing []placedGI) nvml.Return {
	info := d.model.mig.gi[profileID]
	count, computeUsed := uint32(0), info.SliceCount
	for _, e := range existing {
		if e.profileID == profileID {
			count++
		}
		if p.Start < e.placement.Start+e.placement.Size && e.placement.Start < p.Start+p.Size {
			return nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		computeUsed += e.slices
	}
	if count >= info.InstanceCount || computeUsed > uint32(d.model.mig.computeSlices) {
		return nvml.ERROR_INSUFFICIENT_RESOURCES
	}
	return nvml.SUCCESS
}

// GetGpuInstanceRemainingCapacity returns how many more instances of a
// profile can be created next to the existing ones.
func (d *device) GetGpuInstanceRemainingCapacity(info *nvml.GpuInstanceProfileInfo) (int, nvml.Return) {
	r, unlock := d.begin("GetGpuInstanceRemainingCapacity")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	switch {
	case !d.migEnabled():
		return 0, nvml.ERROR_NOT_SUPPORTED
	case info == nil:
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	id := int(info.Id)
	if _, ok := d.model.mig.gi[id]; !ok {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	placed, n := d.placedGIs(), 0
	for _, p := range d.model.mig.giPlacements[id] {
		if d.fitsGI(id, p, placed) == nvml.SUCCESS {
			placed = append(placed, placedGI{id, d.model.mig.gi[id].SliceCount, p})
			n++
		}
	}
	return n, nvml.SUCCESS
}

// CreateGpuInstance creates a GPU instance at the first free placement.
func (d *device) CreateGpuInstance(info *nvml.GpuInstanceProfileInfo) (nvml.GpuInstance, nvml.Return) {
	return d.createGI("CreateGpuInstance", info, nil)
}

// CreateGpuInstanceWithPlacement creates a GPU instance at placement, which
// must be one of the profile's possible placements (else
// ERROR_INVALID_ARGUMENT) and free (else ERROR_INSUFFICIENT_RESOURCES).
func (d *device) CreateGpuInstanceWithPlacement(info *nvml.GpuInstanceProfileInfo, placement *nvml.GpuInstancePlacement) (nvml.GpuInstance, nvml.Return) {
	if placement == nil {
		return nil, d.m.lockedEnterOr(d.index, "CreateGpuInstanceWithPlacement", nvml.ERROR_INVALID_ARGUMENT)
	}
	return d.createGI("CreateGpuInstanceWithPlacement", info, placement)
}

func (d *device) createGI(call string, info *nvml.GpuInstanceProfileInfo, placement *nvml.GpuInstancePlacement) (nvml.GpuInstance, nvml.Return) {
	r, unlock := d.begin(call)
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case !d.migEnabled():
		return nil, nvml.ERROR_NOT_SUPPORTED
	case info == nil:
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	id := int(info.Id)
	prof, ok := d.model.mig.gi[id]
	if !ok {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	legal := d.model.mig.giPlacements[id]
	existing := d.placedGIs()
	var at nvml.GpuInstancePlacement
	if placement != nil {
		if !slices.Contains(legal, *placement) {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		if r := d.fitsGI(id, *placement, existing); r != nvml.SUCCESS {
			return nil, r
		}
		at = *placement
	} else {
		i := slices.IndexFunc(legal, func(p nvml.GpuInstancePlacement) bool { return d.fitsGI(id, p, existing) == nvml.SUCCESS })
		if i < 0 {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		at = legal[i]
	}
	d.advance(d.m.clock.Now())
	gi := d.newGPUInstance(d.newGIID(at), id, prof, at)
	d.gis[gi.id] = gi
	d.migChanged()
	return gi, nvml.SUCCESS
}

// newGIID returns the ID NVML gives a GPU instance at p: its node in a binary
// tree over the memory slices (the whole GPU is 0, its halves 1 and 2, ...),
// which is unique among non-overlapping instances and the same for the same
// layout.
func (d *device) newGIID(p nvml.GpuInstancePlacement) uint32 {
	total := uint32(d.model.mig.memorySlices)
	if p.Size > 0 && total%p.Size == 0 && p.Start%p.Size == 0 {
		id := total/p.Size - 1 + p.Start/p.Size
		if _, taken := d.gis[id]; !taken {
			return id
		}
	}
	id := 2 * total
	for d.gis[id] != nil {
		id++
	}
	return id
}

func (d *device) newGPUInstance(id uint32, profileID int, info nvml.GpuInstanceProfileInfo, p nvml.GpuInstancePlacement) *gpuInstance {
	sgi := server.NewGpuInstanceFromInfo(nvml.GpuInstanceInfo{Device: d, Id: id, ProfileId: info.Id, Placement: p}, d.model.config().MIGProfiles)
	stubMock(d.m, &sgi.GpuInstance, d.index, "GpuInstance")
	return &gpuInstance{
		GpuInstance: sgi, d: d, id: id, profileID: profileID, info: info, placement: p,
		cis: map[uint32]*computeInstance{}, meter: meter{last: d.m.clock.Now()},
	}
}

// GetGpuInstances lists the GPU instances of a profile.
func (d *device) GetGpuInstances(info *nvml.GpuInstanceProfileInfo) ([]nvml.GpuInstance, nvml.Return) {
	r, unlock := d.begin("GetGpuInstances")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case !d.migEnabled():
		return nil, nvml.ERROR_NOT_SUPPORTED
	case info == nil:
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if _, ok := d.model.mig.gi[int(info.Id)]; !ok {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	var out []nvml.GpuInstance
	for _, gi := range d.sortedGIs() {
		if gi.profileID == int(info.Id) {
			out = append(out, gi)
		}
	}
	return out, nvml.SUCCESS
}

// GetGpuInstanceById returns a GPU instance; ERROR_NOT_FOUND if there is none.
func (d *device) GetGpuInstanceById(id int) (nvml.GpuInstance, nvml.Return) {
	r, unlock := d.begin("GetGpuInstanceById")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	if !d.migEnabled() {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	gi, ok := d.gis[uint32(id)]
	if !ok || id < 0 {
		return nil, nvml.ERROR_NOT_FOUND
	}
	return gi, nvml.SUCCESS
}

// GetMaxMigDeviceCount returns how many MIG devices the GPU can hold: 0 unless
// MIG is enabled, as nvml.h documents.
func (d *device) GetMaxMigDeviceCount() (int, nvml.Return) {
	r, unlock := d.begin("GetMaxMigDeviceCount")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	if !d.migEnabled() {
		return 0, nvml.SUCCESS
	}
	return maxGPUInstances, nvml.SUCCESS
}

// GetMigDeviceHandleByIndex returns the index-th MIG device.
func (d *device) GetMigDeviceHandleByIndex(index int) (nvml.Device, nvml.Return) {
	r, unlock := d.begin("GetMigDeviceHandleByIndex")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	switch {
	case !d.migCapable():
		return nil, nvml.ERROR_NOT_SUPPORTED
	case index < 0 || index >= maxGPUInstances:
		return nil, nvml.ERROR_INVALID_ARGUMENT
	case !d.migEnabled():
		return nil, nvml.ERROR_NOT_FOUND
	}
	hs := d.migHandles()
	if index >= len(hs) {
		return nil, nvml.ERROR_NOT_FOUND
	}
	return hs[index], nvml.SUCCESS
}

// IsMigDeviceHandle is false for a physical GPU.
func (d *device) IsMigDeviceHandle() (bool, nvml.Return) {
	r, unlock := d.begin("IsMigDeviceHandle")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return false, r
	}
	return false, nvml.SUCCESS
}

// GetDeviceHandleFromMigDeviceHandle is invalid on a physical GPU.
func (d *device) GetDeviceHandleFromMigDeviceHandle() (nvml.Device, nvml.Return) {
	r, unlock := d.begin("GetDeviceHandleFromMigDeviceHandle")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	return nil, nvml.ERROR_INVALID_ARGUMENT
}

// begin runs the call check for a GPU-instance call; a destroyed instance
// answers ERROR_INVALID_ARGUMENT.
func (gi *gpuInstance) begin(call string) (nvml.Return, *sync.Mutex) {
	r, unlock := gi.d.begin("GpuInstance" + call)
	if r == nvml.SUCCESS && gi.destroyed {
		r = nvml.ERROR_INVALID_ARGUMENT
	}
	return r, unlock
}

// GetInfo describes the GPU instance.
func (gi *gpuInstance) GetInfo() (nvml.GpuInstanceInfo, nvml.Return) {
	r, unlock := gi.begin("GetInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.GpuInstanceInfo{}, r
	}
	return nvml.GpuInstanceInfo{Device: gi.d, Id: gi.id, ProfileId: gi.info.Id, Placement: gi.placement}, nvml.SUCCESS
}

// Destroy destroys the GPU instance: ERROR_IN_USE while compute instances or
// processes exist.
func (gi *gpuInstance) Destroy() nvml.Return {
	r, unlock := gi.begin("Destroy")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return r
	}
	if len(gi.cis) > 0 || len(gi.load.Processes) > 0 {
		return nvml.ERROR_IN_USE
	}
	gi.d.advance(gi.d.m.clock.Now())
	gi.invalidate()
	delete(gi.d.gis, gi.id)
	gi.d.migChanged()
	return nvml.SUCCESS
}

// ciProfile returns a compute-instance profile of this GPU instance.
func (gi *gpuInstance) ciProfile(profile int) (nvml.ComputeInstanceProfileInfo, bool) {
	info, ok := gi.d.model.mig.ci[gi.profileID][profile]
	return info, ok
}

// GetComputeInstanceProfileInfo describes a compute-instance profile.
func (gi *gpuInstance) GetComputeInstanceProfileInfo(profile, engProfile int) (nvml.ComputeInstanceProfileInfo, nvml.Return) {
	r, unlock := gi.begin("GetComputeInstanceProfileInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.ComputeInstanceProfileInfo{}, r
	}
	if profile < 0 || profile >= nvml.COMPUTE_INSTANCE_PROFILE_COUNT || engProfile < 0 || engProfile >= nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT {
		return nvml.ComputeInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	info, ok := gi.ciProfile(profile)
	if !ok {
		return nvml.ComputeInstanceProfileInfo{}, nvml.ERROR_NOT_SUPPORTED
	}
	return info, nvml.SUCCESS
}

// GetComputeInstancePossiblePlacements lists where a compute instance of a
// profile may sit in an empty GPU instance.
func (gi *gpuInstance) GetComputeInstancePossiblePlacements(info *nvml.ComputeInstanceProfileInfo) ([]nvml.ComputeInstancePlacement, nvml.Return) {
	r, unlock := gi.begin("GetComputeInstancePossiblePlacements")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	if info == nil {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	prof, ok := gi.ciProfile(int(info.Id))
	if !ok {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	return ciPlacements(prof.SliceCount, gi.info.SliceCount), nvml.SUCCESS
}

// fitsCI reports whether a compute instance of profile fits at p next to the
// existing compute instances.
func (gi *gpuInstance) fitsCI(profile int, prof nvml.ComputeInstanceProfileInfo, p nvml.ComputeInstancePlacement, existing []*computeInstance) nvml.Return {
	count := uint32(0)
	for _, ci := range existing {
		if ci.profileID == profile {
			count++
		}
		if p.Start < ci.placement.Start+ci.placement.Size && ci.placement.Start < p.Start+p.Size {
			return nvml.ERROR_INSUFFICIENT_RESOURCES
		}
	}
	if count >= prof.InstanceCount {
		return nvml.ERROR_INSUFFICIENT_RESOURCES
	}
	return nvml.SUCCESS
}

// GetComputeInstanceRemainingCapacity returns how many more compute instances
// of a profile fit.
func (gi *gpuInstance) GetComputeInstanceRemainingCapacity(info *nvml.ComputeInstanceProfileInfo) (int, nvml.Return) {
	r, unlock := gi.begin("GetComputeInstanceRemainingCapacity")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	if info == nil {
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	prof, ok := gi.ciProfile(int(info.Id))
	if !ok {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	existing, n := slices.Collect(maps.Values(gi.cis)), 0
	for _, p := range ciPlacements(prof.SliceCount, gi.info.SliceCount) {
		if gi.fitsCI(int(info.Id), prof, p, existing) == nvml.SUCCESS {
			existing = append(existing, &computeInstance{profileID: int(info.Id), placement: p})
			n++
		}
	}
	return n, nvml.SUCCESS
}

// CreateComputeInstance creates a compute instance at the first free
// placement; ERROR_INSUFFICIENT_RESOURCES when the GPU instance's slices or
// the profile's instance count are used up.
func (gi *gpuInstance) CreateComputeInstance(info *nvml.ComputeInstanceProfileInfo) (nvml.ComputeInstance, nvml.Return) {
	return gi.createCI("CreateComputeInstance", info, nil)
}

// CreateComputeInstanceWithPlacement creates a compute instance at placement.
func (gi *gpuInstance) CreateComputeInstanceWithPlacement(info *nvml.ComputeInstanceProfileInfo, placement *nvml.ComputeInstancePlacement) (nvml.ComputeInstance, nvml.Return) {
	if placement == nil {
		return nil, gi.d.m.lockedEnterOr(gi.d.index, "GpuInstanceCreateComputeInstanceWithPlacement", nvml.ERROR_INVALID_ARGUMENT)
	}
	return gi.createCI("CreateComputeInstanceWithPlacement", info, placement)
}

func (gi *gpuInstance) createCI(call string, info *nvml.ComputeInstanceProfileInfo, placement *nvml.ComputeInstancePlacement) (nvml.ComputeInstance, nvml.Return) {
	r, unlock := gi.begin(call)
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	if info == nil {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	id := int(info.Id)
	prof, ok := gi.ciProfile(id)
	if !ok {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	legal := ciPlacements(prof.SliceCount, gi.info.SliceCount)
	existing := slices.Collect(maps.Values(gi.cis))
	var at nvml.ComputeInstancePlacement
	if placement != nil {
		if !slices.Contains(legal, *placement) {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		if r := gi.fitsCI(id, prof, *placement, existing); r != nvml.SUCCESS {
			return nil, r
		}
		at = *placement
	} else {
		i := slices.IndexFunc(legal, func(p nvml.ComputeInstancePlacement) bool {
			return gi.fitsCI(id, prof, p, existing) == nvml.SUCCESS
		})
		if i < 0 {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		at = legal[i]
	}
	ciID := uint32(0)
	for gi.cis[ciID] != nil {
		ciID++
	}
	ci := gi.newComputeInstance(ciID, id, prof, at)
	gi.cis[ciID] = ci
	gi.d.migChanged()
	return ci, nvml.SUCCESS
}

func (gi *gpuInstance) newComputeInstance(id uint32, profileID int, info nvml.ComputeInstanceProfileInfo, p nvml.ComputeInstancePlacement) *computeInstance {
	d := gi.d
	sci := server.NewComputeInstanceFromInfo(nvml.ComputeInstanceInfo{Device: d, GpuInstance: gi, Id: id, ProfileId: info.Id, Placement: p})
	stubMock(d.m, &sci.ComputeInstance, d.index, "ComputeInstance")
	ci := &computeInstance{ComputeInstance: sci, gi: gi, id: id, profileID: profileID, info: info, placement: p}
	md := &migDevice{Device: d.m.migMock(d.index), ci: ci, uuid: migUUID(d.uuid, gi.id, id)}
	ci.handle = md
	return ci
}

// GetComputeInstances lists the compute instances of a profile.
func (gi *gpuInstance) GetComputeInstances(info *nvml.ComputeInstanceProfileInfo) ([]nvml.ComputeInstance, nvml.Return) {
	r, unlock := gi.begin("GetComputeInstances")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	if info == nil {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if _, ok := gi.ciProfile(int(info.Id)); !ok {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	var out []nvml.ComputeInstance
	for _, ci := range gi.sortedCIs() {
		if ci.profileID == int(info.Id) {
			out = append(out, ci)
		}
	}
	return out, nvml.SUCCESS
}

// GetComputeInstanceById returns a compute instance; ERROR_NOT_FOUND if none.
func (gi *gpuInstance) GetComputeInstanceById(id int) (nvml.ComputeInstance, nvml.Return) {
	r, unlock := gi.begin("GetComputeInstanceById")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	ci, ok := gi.cis[uint32(id)]
	if !ok || id < 0 {
		return nil, nvml.ERROR_NOT_FOUND
	}
	return ci, nvml.SUCCESS
}

func (ci *computeInstance) begin(call string) (nvml.Return, *sync.Mutex) {
	r, unlock := ci.gi.d.begin("ComputeInstance" + call)
	if r == nvml.SUCCESS && ci.destroyed {
		r = nvml.ERROR_INVALID_ARGUMENT
	}
	return r, unlock
}

// GetInfo describes the compute instance.
func (ci *computeInstance) GetInfo() (nvml.ComputeInstanceInfo, nvml.Return) {
	r, unlock := ci.begin("GetInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.ComputeInstanceInfo{}, r
	}
	return nvml.ComputeInstanceInfo{Device: ci.gi.d, GpuInstance: ci.gi, Id: ci.id, ProfileId: ci.info.Id, Placement: ci.placement}, nvml.SUCCESS
}

// Destroy destroys the compute instance: ERROR_IN_USE while processes run in it.
func (ci *computeInstance) Destroy() nvml.Return {
	r, unlock := ci.begin("Destroy")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return r
	}
	for _, p := range ci.gi.load.Processes {
		if p.ComputeInstanceID == int(ci.id) {
			return nvml.ERROR_IN_USE
		}
	}
	ci.destroyed = true
	delete(ci.gi.cis, ci.id)
	ci.gi.d.migChanged()
	return nvml.SUCCESS
}

// begin runs the call check for a MIG device call on behalf of the parent
// GPU; a destroyed MIG device answers ERROR_INVALID_ARGUMENT.
func (h *migDevice) begin(call string) (nvml.Return, *sync.Mutex) {
	r, unlock := h.ci.gi.d.begin(call)
	if r == nvml.SUCCESS && h.ci.destroyed {
		r = nvml.ERROR_INVALID_ARGUMENT
	}
	return r, unlock
}

// IsMigDeviceHandle is true.
func (h *migDevice) IsMigDeviceHandle() (bool, nvml.Return) {
	r, unlock := h.begin("IsMigDeviceHandle")
	defer unlock.Unlock()
	return r == nvml.SUCCESS, r
}

// GetUUID returns "MIG-<uuid>", derived from the parent and the instance IDs.
func (h *migDevice) GetUUID() (string, nvml.Return) {
	r, unlock := h.begin("GetUUID")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	return h.uuid, nvml.SUCCESS
}

// GetName returns "<GPU name> MIG <profile>".
func (h *migDevice) GetName() (string, nvml.Return) {
	r, unlock := h.begin("GetName")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return "", r
	}
	d := h.ci.gi.d
	return d.model.name + " MIG " + migProfileName(d.model, h.ci.gi.profileID, h.ci.info.SliceCount), nvml.SUCCESS
}

// GetGpuInstanceId returns the GPU instance ID.
func (h *migDevice) GetGpuInstanceId() (int, nvml.Return) {
	r, unlock := h.begin("GetGpuInstanceId")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return int(h.ci.gi.id), nvml.SUCCESS
}

// GetComputeInstanceId returns the compute instance ID.
func (h *migDevice) GetComputeInstanceId() (int, nvml.Return) {
	r, unlock := h.begin("GetComputeInstanceId")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return int(h.ci.id), nvml.SUCCESS
}

// GetDeviceHandleFromMigDeviceHandle returns the parent GPU.
func (h *migDevice) GetDeviceHandleFromMigDeviceHandle() (nvml.Device, nvml.Return) {
	r, unlock := h.begin("GetDeviceHandleFromMigDeviceHandle")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	return h.ci.gi.d, nvml.SUCCESS
}

// memory returns the GPU instance's memory and what its processes use, in bytes.
func (h *migDevice) memory() (total, used uint64) {
	gi := h.ci.gi
	return gi.info.MemorySizeMB << 20, processMiB(gi.load.Processes) << 20
}

// GetMemoryInfo returns the GPU instance's memory.
func (h *migDevice) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	r, unlock := h.begin("GetMemoryInfo")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.Memory{}, r
	}
	total, used := h.memory()
	return nvml.Memory{Total: total, Used: used, Free: total - used}, nvml.SUCCESS
}

// GetMemoryInfo_v2 returns the GPU instance's memory.
func (h *migDevice) GetMemoryInfo_v2() (nvml.Memory_v2, nvml.Return) {
	r, unlock := h.begin("GetMemoryInfo_v2")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.Memory_v2{}, r
	}
	total, used := h.memory()
	return nvml.Memory_v2{Version: nvml.STRUCT_VERSION(nvml.Memory_v2{}, 2), Total: total, Used: used, Free: total - used}, nvml.SUCCESS
}

// GetAttributes returns the MIG device's SMs, engines, slices and memory.
func (h *migDevice) GetAttributes() (nvml.DeviceAttributes, nvml.Return) {
	r, unlock := h.begin("GetAttributes")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nvml.DeviceAttributes{}, r
	}
	ci, gi := h.ci.info, h.ci.gi.info
	// The engines belong to the GPU instance and are shared by its compute
	// instances: NVML reports the GPU instance's (go-nvml's mock tables
	// leave the compute-instance profiles' counts at zero).
	return nvml.DeviceAttributes{
		MultiprocessorCount:       ci.MultiprocessorCount,
		SharedCopyEngineCount:     max(ci.SharedCopyEngineCount, gi.CopyEngineCount),
		SharedDecoderCount:        max(ci.SharedDecoderCount, gi.DecoderCount),
		SharedEncoderCount:        max(ci.SharedEncoderCount, gi.EncoderCount),
		SharedJpegCount:           max(ci.SharedJpegCount, gi.JpegCount),
		SharedOfaCount:            max(ci.SharedOfaCount, gi.OfaCount),
		GpuInstanceSliceCount:     gi.SliceCount,
		ComputeInstanceSliceCount: ci.SliceCount,
		MemorySizeMB:              gi.MemorySizeMB,
	}, nvml.SUCCESS
}

// GetComputeRunningProcesses lists the processes in this compute instance.
func (h *migDevice) GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	r, unlock := h.begin("GetComputeRunningProcesses")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return nil, r
	}
	var ps []Process
	for _, p := range h.ci.gi.load.Processes {
		if p.ComputeInstanceID == int(h.ci.id) {
			ps = append(ps, p)
		}
	}
	return processInfos(ps), nvml.SUCCESS
}

// GetArchitecture returns the parent's architecture.
func (h *migDevice) GetArchitecture() (nvml.DeviceArchitecture, nvml.Return) {
	r, unlock := h.begin("GetArchitecture")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return h.ci.gi.d.model.arch, nvml.SUCCESS
}

// GetCudaComputeCapability returns the parent's compute capability.
func (h *migDevice) GetCudaComputeCapability() (int, int, nvml.Return) {
	r, unlock := h.begin("GetCudaComputeCapability")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, 0, r
	}
	md := h.ci.gi.d.model
	return md.ccMajor, md.ccMinor, nvml.SUCCESS
}

// GetBrand returns the parent's brand.
func (h *migDevice) GetBrand() (nvml.BrandType, nvml.Return) {
	r, unlock := h.begin("GetBrand")
	defer unlock.Unlock()
	if r != nvml.SUCCESS {
		return 0, r
	}
	return h.ci.gi.d.model.brand, nvml.SUCCESS
}
