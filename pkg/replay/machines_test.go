package replay

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
)

// TestMachinesMatchSimulator checks that the embedded machine templates are
// what Tessera discovers on the simulated machines (go test -update
// rewrites machines.json).
func TestMachinesMatchSimulator(t *testing.T) {
	var want []Machine
	for _, name := range machineNames {
		b, err := backend.Open(context.Background(), "sim:"+name)
		if err != nil {
			t.Fatalf("opening sim:%s: %v", name, err)
		}
		m, err := b.Discover(context.Background())
		if cerr := b.Close(); cerr != nil {
			t.Errorf("closing sim:%s: %v", name, cerr)
		}
		if err != nil {
			t.Fatalf("discovering sim:%s: %v", name, err)
		}
		want = append(want, MachineFromDiscovery(name, m))
	}
	if *update {
		data, err := json.MarshalIndent(want, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("machines.json", append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, w := range want {
		got, err := LookupMachine(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("machines.json entry %s differs from the simulated machine; run go test ./pkg/replay -run TestMachinesMatchSimulator -update", w.Name)
		}
	}
}
