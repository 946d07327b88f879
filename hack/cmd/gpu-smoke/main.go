// Command gpu-smoke compares Tessera's NVML backend with nvidia-smi on a real
// GPU machine: discovery (name, UUID, memory, PCI bus ID, MIG mode) and one
// telemetry snapshot (utilization, temperature, power, memory used, SM clock),
// then the dcgm-exporter series of Tessera's /metrics (identity labels,
// temperature, power, framebuffer, clocks, utilization), each within a
// tolerance, and prints the comparison.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
)

var smiFields = []string{"index", "name", "uuid", "memory.total", "pci.bus_id", "mig.mode.current",
	"utilization.gpu", "temperature.gpu", "power.draw", "memory.used", "clocks.sm",
	"memory.free", "clocks.mem", "utilization.memory"}

func main() {
	interval := flag.Duration("gpm-interval", time.Second, "time between the two telemetry passes")
	flag.Parse()
	ok, err := run(context.Background(), *interval)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-smoke:", err)
		os.Exit(2)
	}
	if !ok {
		fmt.Println("RESULT: MISMATCH")
		os.Exit(1)
	}
	fmt.Println("RESULT: OK")
}

func run(ctx context.Context, interval time.Duration) (bool, error) {
	start := time.Now()
	b, err := nvmlbackend.System()
	if err != nil {
		return false, err
	}
	defer b.Close()
	m, err := b.Discover(ctx)
	if err != nil {
		return false, fmt.Errorf("discovering: %w", err)
	}
	discovered := time.Since(start)
	if err := gpu.WriteMachineTable(os.Stdout, m); err != nil {
		return false, err
	}
	if _, err := b.Sample(ctx); err != nil {
		return false, fmt.Errorf("sampling: %w", err)
	}
	time.Sleep(interval) // GPM rates need two passes; this is a tool, not a test
	snap, err := b.Sample(ctx)
	if err != nil {
		return false, fmt.Errorf("sampling: %w", err)
	}
	rows, err := querySMI()
	if err != nil {
		return false, err
	}
	fmt.Printf("\ndiscovery took %v; comparing with nvidia-smi --query-gpu=%s\n\n", discovered.Round(time.Millisecond), strings.Join(smiFields, ","))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tFIELD\tTESSERA\tNVIDIA-SMI\tTOLERANCE\tOK")
	allOK := true
	check := func(idx int, field, ours, theirs, tol string, ok bool) {
		mark := "yes"
		if !ok {
			mark, allOK = "NO", false
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", idx, field, ours, theirs, tol, mark)
	}
	if len(rows) != len(m.Devices) {
		allOK = false
		fmt.Fprintf(tw, "-\tgpu count\t%d\t%d\texact\tNO\n", len(m.Devices), len(rows))
	}
	for _, row := range rows {
		idx, _ := strconv.Atoi(row["index"])
		var dev *gpu.Device
		for i := range m.Devices {
			if m.Devices[i].Index == idx {
				dev = &m.Devices[i]
			}
		}
		if dev == nil {
			check(idx, "present", "missing", "present", "exact", false)
			continue
		}
		var tel *gpu.DeviceTelemetry
		for i := range snap.Devices {
			if snap.Devices[i].Index == idx {
				tel = &snap.Devices[i]
			}
		}
		check(idx, "name", dev.Name, row["name"], "exact", dev.Name == row["name"])
		check(idx, "uuid", dev.UUID, row["uuid"], "exact", dev.UUID == row["uuid"])
		check(idx, "pci bus id", dev.PCIBusID, row["pci.bus_id"], "same bus", strings.HasSuffix(strings.ToLower(row["pci.bus_id"]), dev.PCIBusID))
		memTotal := num(row["memory.total"])
		check(idx, "memory MiB", fmt.Sprint(dev.MemoryMiB), row["memory.total"], "±1%", within(float64(dev.MemoryMiB), memTotal, 0.01*memTotal))
		migSMI := strings.EqualFold(row["mig.mode.current"], "Enabled")
		if row["mig.mode.current"] != "[N/A]" {
			check(idx, "mig enabled", fmt.Sprint(dev.MIGEnabled), row["mig.mode.current"], "exact", migSMI == dev.MIGEnabled)
		}
		if tel == nil {
			check(idx, "telemetry", "missing", "present", "exact", false)
			continue
		}
		if tel.Err != nil {
			check(idx, "telemetry errors", tel.Err.Error(), "none", "none", false)
		}
		optCheck(check, idx, "gpu util %", tel.GPUUtilPercent, row["utilization.gpu"], 10)
		optCheck(check, idx, "temperature C", tel.GPUTempC, row["temperature.gpu"], 3)
		if tel.PowerWatts.Valid {
			p := num(row["power.draw"])
			check(idx, "power W", fmt.Sprintf("%.1f", tel.PowerWatts.Val), row["power.draw"], "±10% or 15 W",
				within(tel.PowerWatts.Val, p, math.Max(15, 0.1*p)))
		}
		optCheck(check, idx, "memory used MiB", tel.FBUsedMiB, row["memory.used"], 64)
		optCheck(check, idx, "sm clock MHz", tel.SMClockMHz, row["clocks.sm"], 200)
		gpmState := "absent"
		if tel.GPM.GraphicsActive.Valid {
			gpmState = fmt.Sprintf("gr=%.3f sm=%.3f tensor=%.3f dram=%.3f", tel.GPM.GraphicsActive.Val, tel.GPM.SMActive.Val,
				tel.GPM.TensorActive.Val, tel.GPM.DRAMActive.Val)
		}
		fmt.Fprintf(tw, "%d\tgpm (info)\t%s\t-\t-\t-\n", idx, gpmState)
	}
	if err := tw.Flush(); err != nil {
		return false, err
	}
	fmt.Printf("\n/metrics (pkg/telemetry on the same NVML backend) compared with nvidia-smi\n\n")
	fmt.Fprintln(tw, "GPU\tMETRIC\tTESSERA\tNVIDIA-SMI\tTOLERANCE\tOK")
	if err := compareExporter(ctx, b, m, rows, interval, tw, check); err != nil {
		return false, err
	}
	if err := tw.Flush(); err != nil {
		return false, err
	}
	return allOK, nil
}

func optCheck[T uint32 | uint64](check func(int, string, string, string, string, bool), idx int, field string, v gpu.Opt[T], smi string, tol float64) {
	if !v.Valid {
		check(idx, field, "absent", smi, "absent only if [N/A]", strings.Contains(smi, "N/A"))
		return
	}
	check(idx, field, fmt.Sprint(v.Val), smi, fmt.Sprintf("±%g", tol), within(float64(v.Val), num(smi), tol))
}

func within(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func num(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func querySMI() ([]map[string]string, error) {
	var out bytes.Buffer
	cmd := exec.Command("nvidia-smi", "--query-gpu="+strings.Join(smiFields, ","), "--format=csv,noheader,nounits")
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("running nvidia-smi: %w", err)
	}
	r := csv.NewReader(&out)
	r.TrimLeadingSpace = true
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("parsing nvidia-smi output: %w", err)
	}
	rows := make([]map[string]string, 0, len(recs))
	for _, rec := range recs {
		if len(rec) != len(smiFields) {
			return nil, fmt.Errorf("nvidia-smi returned %d fields, want %d: %q", len(rec), len(smiFields), rec)
		}
		row := map[string]string{}
		for i, f := range smiFields {
			row[f] = strings.TrimSpace(rec[i])
		}
		rows = append(rows, row)
	}
	return rows, nil
}
