package topology

import (
	"slices"
	"strconv"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Slice is a MIG slice that exists on a GPU: its profile, placement and
// memory.
type Slice struct {
	Profile   string
	Placement gpu.Placement
	MemoryMiB uint64
}

// SliceGeometry is the profile geometry of a MIG GPU as its existing slices
// give it: each profile present with its placements, and a whole-GPU
// profile spanning the memory slices (the last slice's end rounded up to a
// power of two: 8 on A100/H100/H200/B200, 4 on A30; 7 compute slices, 4 on
// a 4-slice GPU) that sizes each slice's share of the GPU. The scheduler
// knows a GPU only from its GPUNode, which publishes the slices and not the
// profile table the driver reports; the device plugin picks a slice with
// the same geometry, so that both choose the same slice for the same free
// set (PickMIGDevice ranks slices by what they leave placeable: of the
// profiles present, which are the only ones a GPU hands out until its
// layout changes).
func SliceGeometry(sl []Slice) []gpu.MIGProfileInfo {
	end := 1
	var out []gpu.MIGProfileInfo
	for _, s := range sl {
		end = max(end, s.Placement.Start+s.Placement.Size)
		i := slices.IndexFunc(out, func(q gpu.MIGProfileInfo) bool { return q.Name == s.Profile })
		if i < 0 {
			out = append(out, gpu.MIGProfileInfo{Name: s.Profile, SliceCount: ComputeSlices(s.Profile), MemoryMiB: s.MemoryMiB})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].Placements, s.Placement) {
			out[i].Placements = append(out[i].Placements, s.Placement)
			out[i].MaxInstances++
		}
	}
	total := 1
	for total < end {
		total <<= 1
	}
	full := 7
	if total < 8 {
		full = total
	}
	out = append(out, gpu.MIGProfileInfo{Name: strconv.Itoa(full) + "g.full", SliceCount: full, MaxInstances: 1, Placements: []gpu.Placement{{Start: 0, Size: total}}})
	for i := range out {
		slices.SortFunc(out[i].Placements, func(a, b gpu.Placement) int { return a.Start - b.Start })
	}
	return out
}

// ComputeSlices reads the compute slices of a profile name: "3g.40gb" and
// "1c.3g.40gb" are 3; 1 when the name does not say.
func ComputeSlices(profile string) int {
	p := profile
	if _, rest, ok := strings.Cut(p, "c."); ok && strings.Count(p, ".") >= 2 {
		p = rest
	}
	if i := strings.IndexByte(p, 'g'); i > 0 {
		if n, err := strconv.Atoi(p[:i]); err == nil && n > 0 {
			return n
		}
	}
	return 1
}
