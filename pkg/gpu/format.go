package gpu

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// MarshalJSON writes the value, or null when the reading is absent.
func (o Opt[T]) MarshalJSON() ([]byte, error) {
	if !o.Valid {
		return []byte("null"), nil
	}
	return json.Marshal(o.Val)
}

// UnmarshalJSON reads a value or null.
func (o *Opt[T]) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*o = Opt[T]{}
		return nil
	}
	if err := json.Unmarshal(b, &o.Val); err != nil {
		return err
	}
	o.Valid = true
	return nil
}

// MarshalJSON writes the failure with its error as text.
func (f DeviceFailure) MarshalJSON() ([]byte, error) {
	msg := ""
	if f.Err != nil {
		msg = f.Err.Error()
	}
	return json.Marshal(struct {
		Index int    `json:"index"`
		UUID  string `json:"uuid,omitempty"`
		Error string `json:"error"`
	}{f.Index, f.UUID, msg})
}

// TopologyCell renders a link the way nvidia-smi topo -m does: X, NV<n>, or
// the PCIe path.
func TopologyCell(l Link) string {
	switch {
	case l.PCIe == PathSame:
		return "X"
	case l.NVLinks > 0:
		return fmt.Sprintf("NV%d", l.NVLinks)
	default:
		return l.PCIe.String()
	}
}

// WriteMachineTable writes a human-readable description of m: versions,
// devices, MIG devices, the topology matrix and unreadable GPUs.
func WriteMachineTable(w io.Writer, m *Machine) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Backend:\t%s\n", m.Backend)
	if m.Reason != "" {
		fmt.Fprintf(tw, "No GPUs:\t%s\n", m.Reason)
	}
	if m.Versions.Driver != "" {
		fmt.Fprintf(tw, "Driver:\t%s\nNVML:\t%s\nCUDA:\t%s\n", m.Versions.Driver, m.Versions.NVML, m.Versions.CUDADriver)
	}
	if len(m.Devices) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "GPU\tPRODUCT\tMEMORY\tCC\tARCH\tPCI\tNUMA\tMIG\tUUID")
		for _, d := range m.Devices {
			fmt.Fprintf(tw, "%d\t%s\t%d MiB\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Index, d.Product, d.MemoryMiB,
				d.ComputeCapability, d.Architecture, d.PCIBusID, d.NUMANode, migState(d), d.UUID)
		}
	}
	var migs []MIGDevice
	for _, d := range m.Devices {
		migs = append(migs, d.MIGDevices...)
	}
	if len(migs) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "GPU\tGI\tCI\tPROFILE\tPLACEMENT\tMEMORY\tSMS\tUUID")
		for _, g := range migs {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d MiB\t%d\t%s\n", g.Parent, g.GPUInstanceID, g.ComputeInstanceID,
				g.Profile, g.Placement, g.MemoryMiB, g.MultiprocessorCount, g.UUID)
		}
	}
	if n := len(m.Topology.Links); n > 1 {
		fmt.Fprintln(tw)
		header := make([]string, 0, n+2)
		header = append(header, "")
		for _, d := range m.Devices {
			header = append(header, fmt.Sprintf("GPU%d", d.Index))
		}
		header = append(header, "NUMA")
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for i, row := range m.Topology.Links {
			cells := make([]string, 0, n+2)
			cells = append(cells, fmt.Sprintf("GPU%d", m.Devices[i].Index))
			for _, l := range row {
				cells = append(cells, TopologyCell(l))
			}
			cells = append(cells, fmt.Sprint(m.Devices[i].NUMANode))
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	}
	if len(m.Failed) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "UNREADABLE GPU\tUUID\tERROR")
		for _, f := range m.Failed {
			fmt.Fprintf(tw, "%d\t%s\t%v\n", f.Index, f.UUID, f.Err)
		}
	}
	return tw.Flush()
}

func migState(d Device) string {
	switch {
	case !d.MIGCapable:
		return "n/a"
	case d.MIGEnabled != d.MIGPendingEnabled:
		return fmt.Sprintf("%s (pending %s)", onOff(d.MIGEnabled), onOff(d.MIGPendingEnabled))
	default:
		return onOff(d.MIGEnabled)
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
