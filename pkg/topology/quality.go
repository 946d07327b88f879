package topology

import (
	"fmt"
	"math"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// Quality is how well the GPUs of one set are connected. Qualities of sets of
// the same size are comparable with Compare; the zero Quality is not a valid
// set's quality. Quality is a comparable struct, so equal sets can be found
// with ==.
type Quality struct {
	// Size is the number of GPUs in the set.
	Size int
	// MinNVLinks is the NVLink count of the set's weakest pair; 0 for a single GPU.
	MinNVLinks int
	// NVLinks is the NVLink count summed over every pair of the set.
	NVLinks int
	// PCIe is the set's worst pairwise PCIe path; gpu.PathSame for a single GPU.
	PCIe gpu.PCIePath
	// NUMANodes is the number of NUMA nodes the set spans (an unknown NUMA
	// node counts as one node of its own).
	NUMANodes int
}

// Compare returns a positive number when q is better connected than o, a
// negative number when it is worse, and 0 when they rank equal. The order is
// MinNVLinks (more is better), NVLinks (more), PCIe (closer) and NUMANodes
// (fewer). Size is not compared: compare qualities of sets of the same size.
func (q Quality) Compare(o Quality) int {
	switch {
	case q.MinNVLinks != o.MinNVLinks:
		return sign(q.MinNVLinks > o.MinNVLinks)
	case q.NVLinks != o.NVLinks:
		return sign(q.NVLinks > o.NVLinks)
	case q.PCIe != o.PCIe:
		return sign(q.PCIe < o.PCIe)
	case q.NUMANodes != o.NUMANodes:
		return sign(q.NUMANodes < o.NUMANodes)
	}
	return 0
}

// sign is 1 when better, -1 otherwise.
func sign(better bool) int {
	if better {
		return 1
	}
	return -1
}

// Better reports whether q ranks strictly better than o.
func (q Quality) Better(o Quality) bool { return q.Compare(o) > 0 }

// String describes the quality the way nvidia-smi topo names links:
// "4 GPUs: NV18 min, 108 NVLinks, worst PIX, 1 NUMA node".
func (q Quality) String() string {
	numa := "nodes"
	if q.NUMANodes == 1 {
		numa = "node"
	}
	return fmt.Sprintf("%d GPUs: NV%d min, %d NVLinks, worst %s, %d NUMA %s",
		q.Size, q.MinNVLinks, q.NVLinks, q.PCIe, q.NUMANodes, numa)
}

// noPairs stands for the weakest-pair NVLink count of a set without pairs
// while searching: a set that has no pair yet may still get any count.
const noPairs = math.MaxInt

// public turns a search-time quality into the one callers see.
func (q Quality) public() Quality {
	if q.MinNVLinks == noPairs {
		q.MinNVLinks = 0
	}
	return q
}
