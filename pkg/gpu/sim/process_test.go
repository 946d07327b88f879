package sim

import (
	"errors"
	"io/fs"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestProcessUtilization(t *testing.T) {
	m, lib, clk := newMachine(t, "dgx-h100")
	d := handle(t, lib, 2)
	if _, r := d.GetProcessUtilization(0); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("without processes: %v, want ERROR_NOT_FOUND", r)
	}
	if err := m.SetLoad(2, Load{SMActive: 0.9, Processes: []Process{
		{PID: 10, UsedMemoryMiB: 100, SMUtil: 0.7, MemUtil: 0.2, Cgroup: "/kubepods/besteffort/podx/abc"},
		{PID: 11, UsedMemoryMiB: 100, SMUtil: 0.2},
	}}); err != nil {
		t.Fatal(err)
	}
	s, r := d.GetProcessUtilization(0)
	wantRet(t, "GetProcessUtilization", r, nvml.SUCCESS)
	now := uint64(clk.Now().UnixMicro())
	if len(s) != 2 || s[0].Pid != 10 || s[0].SmUtil != 70 || s[0].MemUtil != 20 || s[1].SmUtil != 20 || s[0].TimeStamp != now {
		t.Errorf("samples %+v", s)
	}
	if _, r := d.GetProcessUtilization(now); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("no newer samples: %v, want ERROR_NOT_FOUND", r)
	}
	clk.SetTime(clk.Now().Add(time.Second))
	if s, r := d.GetProcessUtilization(now); r != nvml.SUCCESS || len(s) != 2 {
		t.Errorf("a second later: %v, %v", s, r)
	}

	cg, err := m.ReadCgroup(10)
	if err != nil || string(cg) != "0::/kubepods/besteffort/podx/abc\n" {
		t.Errorf("ReadCgroup(10) = %q, %v", cg, err)
	}
	if cg, _ := m.ReadCgroup(11); string(cg) != "0::/\n" {
		t.Errorf("ReadCgroup(11) = %q", cg)
	}
	if _, err := m.ReadCgroup(12); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadCgroup(12) error %v, want fs.ErrNotExist", err)
	}
	if err := m.SetLoad(2, Load{Processes: []Process{{PID: 10, SMUtil: 1.5}}}); err == nil {
		t.Error("SetLoad accepted SMUtil 1.5")
	}
	if err := m.SetLoad(2, Load{Processes: []Process{{PID: 10, Cgroup: "relative"}}}); err == nil {
		t.Error("SetLoad accepted a relative cgroup")
	}
}

func TestProcessUtilizationInMIGMode(t *testing.T) {
	_, _, d := newMIGEnabledGPU(t, "dgx-h100", 0)
	if _, r := d.GetProcessUtilization(0); r != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("MIG mode: %v, want ERROR_NOT_SUPPORTED", r)
	}
}
