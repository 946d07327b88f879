package inventory_test

import (
	"context"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/gputest"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// simMachine is a simulated machine behind the NVML backend, as the agent
// runs it with --backend=sim:<name>.
type simMachine struct {
	sim     *sim.Machine
	backend *nvmlbackend.Backend
}

func openSim(t testing.TB, name string) *simMachine {
	t.Helper()
	m, err := sim.Open(name)
	if err != nil {
		t.Fatalf("opening simulated machine %s: %v", name, err)
	}
	b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:"+name))
	if err != nil {
		t.Fatalf("opening nvml backend over %s: %v", name, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &simMachine{sim: m, backend: b}
}

func (s *simMachine) discover(t testing.TB) *gpu.Machine {
	t.Helper()
	m, err := s.backend.Discover(context.Background())
	if err != nil {
		t.Fatalf("discovering: %v", err)
	}
	return m
}

// scenario is a machine as the device plugin serves it.
type scenario struct {
	name        string
	machine     *gpu.Machine
	options     deviceplugin.Options
	resources   []deviceplugin.Resource
	machineType string
}

func newScenario(t testing.TB, name string, m *gpu.Machine, o deviceplugin.Options, machineType string) scenario {
	t.Helper()
	res, err := deviceplugin.Build(m, o)
	if err != nil {
		t.Fatalf("building resources of %s: %v", name, err)
	}
	return scenario{name: name, machine: m, options: o, resources: res, machineType: machineType}
}

// dgxMIGMixed is a DGX H100 with four whole GPUs and four in MIG mode with
// mixed profiles, under the mixed strategy.
func dgxMIGMixed(t testing.TB) scenario {
	s := openSim(t, "dgx-h100")
	gputest.FillMIG(t, s.backend, 4, "3g.40gb", "2g.20gb", "1g.10gb")
	gputest.FillMIG(t, s.backend, 5, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	gputest.FillMIG(t, s.backend, 6, "4g.40gb", "1g.20gb", "1g.10gb+me")
	gputest.FillMIG(t, s.backend, 7, "7g.80gb")
	return newScenario(t, "dgx-h100-mig-mixed", s.discover(t),
		deviceplugin.Options{MIGStrategy: deviceplugin.MIGStrategyMixed}, "DGXH100")
}

// dgxMIGSingle is a DGX H100 with every GPU split into 1g.10gb slices,
// under the single strategy.
func dgxMIGSingle(t testing.TB) scenario {
	s := openSim(t, "dgx-h100")
	for i := range 8 {
		gputest.FillMIG(t, s.backend, i, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	return newScenario(t, "dgx-h100-mig-single", s.discover(t),
		deviceplugin.Options{MIGStrategy: deviceplugin.MIGStrategySingle}, "DGXH100")
}

// l40sShared is the 4×L40S server with every GPU time-sliced in 4.
func l40sShared(t testing.TB) scenario {
	s := openSim(t, "pcie-4xl40s")
	return newScenario(t, "pcie-4xl40s-time-sliced", s.discover(t), deviceplugin.Options{
		Sharing: []deviceplugin.ShareRule{{Field: "sharing.timeSlicing.resources[0]", Resource: deviceplugin.ResourceGPU, Replicas: 4}},
	}, "PowerEdge R760xa")
}

// rtx4090 is the two-GPU workstation, no sharing, no MIG.
func rtx4090(t testing.TB) scenario {
	s := openSim(t, "ws-2xrtx4090")
	return newScenario(t, "ws-2xrtx4090", s.discover(t), deviceplugin.Options{}, "")
}
