package mig_test

import (
	"os"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/mig"
)

// BenchmarkApplyDGXH100 switches the 8 GPUs of a simulated DGX H100 between
// two of NVIDIA's layouts (all-balanced and all-1g.10gb: every GPU changes)
// and back, planning each from a fresh discovery, with a journal. It reports
// NVML inits per operation, which must stay 0: the backend initialised once.
func BenchmarkApplyDGXH100(b *testing.B) {
	f := exampleFile(b, gpuOperatorDefaults)
	be := newSim(b, "dgx-h100")
	a := mig.NewApplier(be, b.TempDir()+"/mig-journal.json")
	c := ctx(b)
	inits := be.Sim.Calls("Init")
	b.ResetTimer()
	for b.Loop() {
		for _, name := range []string{"all-balanced", "all-1g.10gb"} {
			m, err := be.Discover(c)
			if err != nil {
				b.Fatal(err)
			}
			p, err := mig.NewPlan(f, name, m)
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Changed()) != 8 {
				b.Fatalf("%s changes %d gpus, want 8", name, len(p.Changed()))
			}
			if _, err := a.Apply(c, p); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(be.Sim.Calls("Init")-inits)/float64(b.N), "inits/op")
}

// FuzzParse checks that Parse never panics and that what it accepts has a
// version and configs.
func FuzzParse(f *testing.F) {
	for _, path := range []string{migPartedExample, "testdata/one-a100.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: v1\nmig-configs:\n  a:\n    - device-filter: 0x233010DE\n      devices: [0]\n      mig-enabled: true\n      mig-devices: {1g.10gb: 2}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := mig.Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		if file.Version != mig.Version || len(file.Configs) == 0 {
			t.Errorf("Parse accepted a file without version or configs: %+v", file)
		}
	})
}
