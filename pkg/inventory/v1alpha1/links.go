package v1alpha1

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PCIe paths a link cell may name, nearest first, as nvidia-smi topo -m
// writes them; SelfCell is the matrix diagonal.
var PCIePaths = []string{"PIX", "PXB", "PHB", "NODE", "SYS", "UNKNOWN"}

// SelfCell is the diagonal cell of the link matrix.
const SelfCell = "X"

// LinkCell is one decoded cell of GPUNodeStatus.Links.
//
// +kubebuilder:object:generate=false
type LinkCell struct {
	// Self is true on the diagonal; the other fields are then zero.
	Self bool
	// NVLinks is the number of NVLink links between the pair.
	NVLinks int
	// NVSwitch is true when those links go through an NVSwitch fabric.
	NVSwitch bool
	// PCIe is the PCIe path: one of PCIePaths.
	PCIe string
}

// String encodes the cell: "X", "SYS", "NV4:PHB", "NVS18:NODE".
func (c LinkCell) String() string {
	if c.Self {
		return SelfCell
	}
	switch {
	case c.NVLinks > 0 && c.NVSwitch:
		return "NVS" + strconv.Itoa(c.NVLinks) + ":" + c.PCIe
	case c.NVLinks > 0:
		return "NV" + strconv.Itoa(c.NVLinks) + ":" + c.PCIe
	}
	return c.PCIe
}

// ParseLinkCell decodes a cell written by LinkCell.String.
func ParseLinkCell(s string) (LinkCell, error) {
	if s == SelfCell {
		return LinkCell{Self: true}, nil
	}
	var c LinkCell
	if nv, pcie, ok := strings.Cut(s, ":"); ok {
		digits, sw := strings.CutPrefix(nv, "NVS")
		if !sw {
			var isNV bool
			if digits, isNV = strings.CutPrefix(nv, "NV"); !isNV {
				return LinkCell{}, fmt.Errorf("link cell %q: want NV<n>:<path> or NVS<n>:<path>", s)
			}
		}
		n, err := strconv.Atoi(digits)
		if err != nil || n < 1 {
			return LinkCell{}, fmt.Errorf("link cell %q: NVLink count %q is not a positive integer", s, digits)
		}
		c.NVLinks, c.NVSwitch, s = n, sw, pcie
	}
	if !slices.Contains(PCIePaths, s) {
		return LinkCell{}, fmt.Errorf("link cell PCIe path %q: want one of %s", s, strings.Join(PCIePaths, ", "))
	}
	c.PCIe = s
	return c, nil
}

// ParseLinks decodes a whole matrix and checks that it is square with
// SelfCell exactly on the diagonal. n is the expected number of GPUs.
func ParseLinks(rows []string, n int) ([][]LinkCell, error) {
	if len(rows) != n {
		return nil, fmt.Errorf("link matrix has %d rows, want %d (one per GPU)", len(rows), n)
	}
	out := make([][]LinkCell, n)
	for i, row := range rows {
		cells := strings.Fields(row)
		if len(cells) != n {
			return nil, fmt.Errorf("link matrix row %d has %d cells, want %d", i, len(cells), n)
		}
		out[i] = make([]LinkCell, n)
		for j, s := range cells {
			c, err := ParseLinkCell(s)
			if err != nil {
				return nil, fmt.Errorf("link matrix row %d cell %d: %w", i, j, err)
			}
			if c.Self != (i == j) {
				return nil, fmt.Errorf("link matrix row %d cell %d: %q on the diagonal must be exactly %q", i, j, s, SelfCell)
			}
			out[i][j] = c
		}
	}
	return out, nil
}
