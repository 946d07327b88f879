package gpu

import "fmt"

// PCIePath is the closest common PCIe ancestor of two GPUs, from nearest to
// farthest, following nvidia-smi topo's PIX/PXB/PHB/NODE/SYS vocabulary.
type PCIePath int

// PCIe paths, best first. The numeric order is used for comparisons: a smaller
// value is a closer path.
const (
	PathSame         PCIePath = iota // the same device (the matrix diagonal)
	PathSingleSwitch                 // PIX: one PCIe switch between them
	PathMultiSwitch                  // PXB: several PCIe switches, no host bridge
	PathHostBridge                   // PHB: through one CPU's PCIe host bridge
	PathSameCPU                      // NODE: host bridges within one NUMA node / CPU
	PathCrossCPU                     // SYS: across the CPU interconnect (QPI/UPI/Infinity Fabric)
	PathUnknown
)

var pathNames = [...]string{"SELF", "PIX", "PXB", "PHB", "NODE", "SYS", "UNKNOWN"}

// String returns nvidia-smi topo's abbreviation.
func (p PCIePath) String() string {
	if p < 0 || int(p) >= len(pathNames) {
		return fmt.Sprintf("PCIePath(%d)", int(p))
	}
	return pathNames[p]
}

// Link describes how two GPUs reach each other.
type Link struct {
	// NVLinks is the number of active NVLink links between the pair; on
	// NVSwitch systems every pair gets the links each GPU has into the fabric.
	NVLinks int
	// NVSwitch is true when the NVLinks go through an NVSwitch fabric.
	NVSwitch bool
	PCIe     PCIePath
}

// Topology is the symmetric pairwise link matrix of a machine's GPUs.
type Topology struct {
	Links [][]Link
}

// NewTopology returns an n×n matrix with PathSame on the diagonal and
// PathUnknown elsewhere.
func NewTopology(n int) Topology {
	t := Topology{Links: make([][]Link, n)}
	for i := range t.Links {
		t.Links[i] = make([]Link, n)
		for j := range t.Links[i] {
			if i != j {
				t.Links[i][j].PCIe = PathUnknown
			}
		}
	}
	return t
}

// Between returns the link between GPU indices a and b.
func (t Topology) Between(a, b int) Link { return t.Links[a][b] }

// Set records a link for both directions.
func (t Topology) Set(a, b int, l Link) {
	t.Links[a][b] = l
	t.Links[b][a] = l
}

// Validate checks that the matrix is square, symmetric and has PathSame exactly
// on the diagonal.
func (t Topology) Validate() error {
	n := len(t.Links)
	for i := range n {
		if len(t.Links[i]) != n {
			return fmt.Errorf("topology row %d has %d entries, want %d", i, len(t.Links[i]), n)
		}
	}
	for i := range n {
		for j := range n {
			if (i == j) != (t.Links[i][j].PCIe == PathSame) {
				return fmt.Errorf("topology entry [%d][%d] has path %s", i, j, t.Links[i][j].PCIe)
			}
			if t.Links[i][j] != t.Links[j][i] {
				return fmt.Errorf("topology is not symmetric at [%d][%d]: %+v vs %+v", i, j, t.Links[i][j], t.Links[j][i])
			}
		}
	}
	return nil
}
