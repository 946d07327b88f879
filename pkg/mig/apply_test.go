package mig_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

// fits lists, per simulated machine and example file, the configs that fit
// the machine's GPUs; every other config of the file names a profile the GPUs
// do not offer.
var fits = map[string]map[string][]string{
	"dgx-a100": {
		migPartedExample: {"all-1g.5gb", "all-2g.10gb", "all-3g.20gb", "all-balanced", "all-disabled", "all-enabled", "custom-config"},
		gpuOperatorDefaults: {"all-1g.10gb", "all-1g.5gb", "all-1g.5gb.me", "all-2g.10gb", "all-3g.20gb", "all-4g.20gb",
			"all-7g.40gb", "all-balanced", "all-disabled", "all-enabled"},
	},
	"dgx-h100": {
		migPartedExample: {"all-disabled", "all-enabled"},
		gpuOperatorDefaults: {"all-1g.10gb", "all-1g.10gb.me", "all-1g.20gb", "all-2g.20gb", "all-3g.40gb", "all-4g.40gb",
			"all-7g.80gb", "all-balanced", "all-disabled", "all-enabled"},
	},
}

func exampleFile(t testing.TB, which string) *mig.File {
	t.Helper()
	if which == gpuOperatorDefaults {
		return mustLoad(t, operatorConfig(t))
	}
	return mustLoad(t, which)
}

// applyConfig plans config name against b's machine, applies it and checks
// the outcome; it returns the plan.
func applyConfig(t testing.TB, b mig.Backend, f *mig.File, name string) *mig.Plan {
	t.Helper()
	before := discover(t, b)
	p := mustPlan(t, f, name, before)
	got, err := mig.NewApplier(b, "").Apply(ctx(t), p)
	if err != nil {
		t.Fatalf("applying %s: %v", name, err)
	}
	checkApplied(t, b, f, name, p, got)
	return p
}

// checkApplied checks that b's GPUs have what config name asks (read from the
// config itself), the placements of plan p, and that Apply's machine is what
// discovery sees.
func checkApplied(t testing.TB, b mig.Backend, f *mig.File, name string, p *mig.Plan, got *gpu.Machine) {
	t.Helper()
	now := discover(t, b)
	if !sameLayouts(layouts(got), layouts(now)) {
		t.Errorf("%s: Apply returned layouts %v, discovery sees %v", name, layouts(got), layouts(now))
	}
	want := wantCounts(f, name, now)
	for _, d := range now.Devices {
		l := mig.LayoutOf(d)
		if w, ok := want[d.Index]; ok && !l.Satisfies(w) {
			t.Errorf("%s: gpu %d has %s, the config asks for %s", name, d.Index, l, w)
		}
		if !l.Matches(p.GPUs[d.Index].Desired) {
			t.Errorf("%s: gpu %d has %s, the plan wanted %s", name, d.Index, l, p.GPUs[d.Index].Desired)
		}
	}
	again := mustPlan(t, f, name, now)
	if !again.Empty() {
		t.Errorf("%s: after applying, a new plan still changes gpus:\n%s", name, again)
	}
}

func TestApplyEveryExampleConfig(t *testing.T) {
	for _, machine := range []string{"dgx-a100", "dgx-h100"} {
		for _, which := range []string{migPartedExample, gpuOperatorDefaults} {
			f := exampleFile(t, which)
			for _, name := range f.Names() {
				t.Run(machine+"/"+filepath.Base(which)+"/"+name, func(t *testing.T) {
					b := newSim(t, machine)
					if !slices.Contains(fits[machine][which], name) {
						_, err := mig.NewPlan(f, name, discover(t, b))
						if !errors.Is(err, mig.ErrInvalidLayout) || !strings.Contains(err.Error(), "does not offer the profile") {
							t.Fatalf("NewPlan(%s) error %v, want one saying the gpus do not offer a profile", name, err)
						}
						return
					}
					p := applyConfig(t, b, f, name)
					// Applying the same plan again changes nothing.
					creates := b.Sim.Calls("CreateGpuInstanceWithPlacement")
					got, err := mig.NewApplier(b, "").Apply(ctx(t), p)
					if err != nil {
						t.Fatalf("applying %s again: %v", name, err)
					}
					checkApplied(t, b, f, name, p, got)
					if n := b.Sim.Calls("CreateGpuInstanceWithPlacement") - creates; n != 0 {
						t.Errorf("applying %s again created %d gpu instances", name, n)
					}
				})
			}
		}
	}
}

// TestApplyTransitions applies every pair of fitting configs of each of
// NVIDIA's files in turn: A, then B, then A again.
func TestApplyTransitions(t *testing.T) {
	for _, which := range []string{migPartedExample, gpuOperatorDefaults} {
		f := exampleFile(t, which)
		for _, machine := range []string{"dgx-a100", "dgx-h100"} {
			names := fits[machine][which]
			for _, from := range names {
				t.Run(machine+"/"+filepath.Base(which)+"/from "+from, func(t *testing.T) {
					b := newSim(t, machine)
					applyConfig(t, b, f, from)
					for _, to := range names {
						applyConfig(t, b, f, to)
						applyConfig(t, b, f, from)
					}
				})
			}
		}
	}
}

// callNames are the device-level NVML calls (counted on the GPU) that
// discovery and MIG changes make.
var callNames = []string{
	"GetMigMode", "SetMigMode", "GetMemoryInfo", "GetGpuInstanceProfileInfo", "GetGpuInstancePossiblePlacements",
	"CreateGpuInstanceWithPlacement", "GpuInstanceGetInfo", "GpuInstanceGetComputeInstanceProfileInfo",
	"GpuInstanceCreateComputeInstance", "ComputeInstanceGetInfo", "GetMaxMigDeviceCount", "GetMigDeviceHandleByIndex",
	"GetGpuInstanceById", "GpuInstanceGetComputeInstances", "GpuInstanceGetComputeInstanceById",
	"ComputeInstanceDestroy", "GpuInstanceDestroy", "GetUUID", "GetGpuInstanceId", "GetComputeInstanceId", "GetAttributes",
}

// changeCalls are the calls that change the GPU.
var changeCalls = []string{"SetMigMode", "CreateGpuInstanceWithPlacement", "GpuInstanceCreateComputeInstance", "ComputeInstanceDestroy", "GpuInstanceDestroy"}

// transition is a layout change of a one-GPU machine.
type transition struct {
	name     string
	machine  string // machine description in testdata
	from, to string // mig-devices of the config, "off" for MIG disabled
}

var oneGPUTransitions = []transition{
	{"enable and create", "one-a100", "off", "{1g.5gb: 2, 2g.10gb: 1, 3g.20gb: 1}"},
	{"destroy and disable", "one-a100", "{1g.5gb: 2, 2g.10gb: 1, 3g.20gb: 1}", "off"},
	{"destroy and create", "one-a100", "{1g.5gb: 2, 2g.10gb: 1, 3g.20gb: 1}", "{3g.20gb: 2}"},
	{"keep some, change others", "one-h100", "{3g.40gb: 1, 1g.10gb: 3}", "{3g.40gb: 1, 2g.20gb: 1, 1g.10gb: 2}"},
}

func transitionFile(t testing.TB, tr transition) *mig.File {
	t.Helper()
	entry := func(devs string) string {
		if devs == "off" {
			return "    - devices: all\n      mig-enabled: false\n"
		}
		return "    - devices: all\n      mig-enabled: true\n      mig-devices: " + devs + "\n"
	}
	return mustParse(t, "version: v1\nmig-configs:\n  from:\n"+entry(tr.from)+"  to:\n"+entry(tr.to))
}

func openOne(t testing.TB, machine string) *backend.Opened {
	t.Helper()
	return newSim(t, "testdata/"+machine+".yaml")
}

// TestApplyRollsBackAtEveryCall fails each NVML call the apply makes, one at
// a time (the n-th call of each name), and checks that Apply fails, says it
// rolled back, and leaves the GPU in its previous layout with no journal.
func TestApplyRollsBackAtEveryCall(t *testing.T) {
	for _, tr := range oneGPUTransitions {
		f := transitionFile(t, tr)
		// Count the calls of a clean apply.
		b := openOne(t, tr.machine)
		applyConfig(t, b, f, "from")
		plan := mustPlan(t, f, "to", discover(t, b))
		b.Sim.ResetCalls()
		if _, err := mig.NewApplier(b, "").Apply(ctx(t), plan); err != nil {
			t.Fatalf("%s: clean apply: %v", tr.name, err)
		}
		total := 0
		for _, call := range callNames {
			calls := b.Sim.Calls(call)
			total += calls
			for n := 1; n <= calls; n++ {
				t.Run(fmt.Sprintf("%s/%s #%d", tr.name, call, n), func(t *testing.T) {
					b := openOne(t, tr.machine)
					applyConfig(t, b, f, "from")
					before := discover(t, b)
					p := mustPlan(t, f, "to", before)
					if n > 1 {
						b.Sim.InjectFault(sim.Fault{GPU: 0, Call: call, Return: nvml.SUCCESS, Times: n - 1})
					}
					b.Sim.InjectFault(sim.Fault{GPU: 0, Call: call, Return: nvml.ERROR_UNKNOWN, Times: 1})
					journal := filepath.Join(t.TempDir(), "mig-journal.json")
					got, err := mig.NewApplier(b, journal).Apply(ctx(t), p)
					if err == nil {
						// The backend tolerates some failed reads (a MIG
						// device handle it was not looking for); a failed
						// change must fail the apply.
						if slices.Contains(changeCalls, call) {
							t.Fatalf("Apply succeeded with call %d of %s failing", n, call)
						}
						checkApplied(t, b, f, "to", p, got)
						return
					}
					var ae *mig.ApplyError
					if !errors.As(err, &ae) {
						t.Fatalf("error %v is not an *ApplyError", err)
					}
					if ae.RollbackErr != nil {
						t.Fatalf("rollback failed: %v", err)
					}
					if !strings.Contains(err.Error(), "rolled back gpus [0]") && !strings.Contains(err.Error(), "no gpu was changed") {
						t.Errorf("error %q does not say the gpu was rolled back", err)
					}
					if slices.Contains(changeCalls, call) && !strings.Contains(err.Error(), "ERROR_UNKNOWN") {
						t.Errorf("error %q does not say what failed", err)
					}
					after := discover(t, b)
					if !sameLayouts(layouts(before), layouts(after)) {
						t.Errorf("after the failed apply gpu 0 has %s, want the previous %s", mig.LayoutOf(after.Devices[0]), mig.LayoutOf(before.Devices[0]))
					}
					if _, err := os.Stat(journal); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("journal left after a rolled-back apply: %v", err)
					}
				})
			}
		}
		if total == 0 {
			t.Fatalf("%s: the clean apply made none of the calls counted", tr.name)
		}
	}
}

// TestApplyRollbackFailure makes the rollback fail too and checks the error
// says so and what is left, and the journal stays for Recover.
func TestApplyRollbackFailure(t *testing.T) {
	tr := oneGPUTransitions[2]
	f := transitionFile(t, tr)
	b := openOne(t, tr.machine)
	applyConfig(t, b, f, "from")
	before := discover(t, b)
	p := mustPlan(t, f, "to", before)
	// Every instance creation fails, for the apply and for the rollback.
	b.Sim.InjectFault(sim.Fault{GPU: 0, Call: "CreateGpuInstanceWithPlacement", Return: nvml.ERROR_UNKNOWN})
	journal := filepath.Join(t.TempDir(), "mig-journal.json")
	_, err := mig.NewApplier(b, journal).Apply(ctx(t), p)
	var ae *mig.ApplyError
	if !errors.As(err, &ae) || ae.RollbackErr == nil {
		t.Fatalf("error %v, want an *ApplyError with a failed rollback", err)
	}
	// What is left: the instances the plan kept, nothing created.
	g := p.GPUs[0]
	kept := mig.Layout{MIGEnabled: true}
	for _, in := range g.Current.Instances {
		if !slices.ContainsFunc(g.Destroy, func(d mig.Instance) bool { return d.UUID == in.UUID }) {
			kept.Instances = append(kept.Instances, in)
		}
	}
	if l, ok := ae.Left[0]; !ok || len(ae.Left) != 1 || !l.Matches(kept) {
		t.Errorf("Left %v, want gpu 0 with %s", ae.Left, kept)
	}
	if !strings.Contains(err.Error(), "rollback failed") || !strings.Contains(err.Error(), "left: gpu 0: "+kept.String()) {
		t.Errorf("error %q does not say the rollback failed and what is left", err)
	}
	if _, err := os.Stat(journal); err != nil {
		t.Fatalf("journal gone after a failed rollback: %v", err)
	}
	// Apply refuses to run over the pending journal; Recover, once the fault
	// is gone, restores the previous layout.
	if _, err := mig.NewApplier(b, journal).Apply(ctx(t), p); !errors.Is(err, mig.ErrJournalPending) {
		t.Errorf("Apply over a pending journal: %v, want ErrJournalPending", err)
	}
	b.Sim.ClearFaults()
	rec, err := mig.NewApplier(b, journal).Recover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.GPUs) != 1 || !rec.GPUs[0].Found.Matches(kept) {
		t.Errorf("Recover reported %s", rec)
	}
	if !sameLayouts(layouts(before), layouts(discover(t, b))) {
		t.Errorf("after Recover: %v, want %v", layouts(discover(t, b)), layouts(before))
	}
}

func TestApplyResetRequired(t *testing.T) {
	tr := oneGPUTransitions[0]
	f := transitionFile(t, tr)
	b := openOne(t, tr.machine)
	if err := b.Sim.SetResetRequiredForMIG(0, true); err != nil {
		t.Fatal(err)
	}
	before := discover(t, b)
	p := mustPlan(t, f, "to", before)
	enables := b.Sim.Calls("SetMigMode")
	_, err := mig.NewApplier(b, "").Apply(ctx(t), p)
	if !errors.Is(err, gpu.ErrResetRequired) {
		t.Fatalf("error %v, want one wrapping gpu.ErrResetRequired", err)
	}
	for _, w := range []string{"enable mig on gpu 0", "the node cannot reset the gpu; not retried", "rolled back gpus [0]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	// One attempt, one rollback; no retries.
	if n := b.Sim.Calls("SetMigMode") - enables; n != 2 {
		t.Errorf("SetMigMode called %d times, want 2 (the change and its rollback)", n)
	}
	after := discover(t, b)
	if d := after.Devices[0]; d.MIGEnabled || d.MIGPendingEnabled {
		t.Errorf("gpu 0 mig enabled %v, pending %v; want both false (pending change cancelled)", d.MIGEnabled, d.MIGPendingEnabled)
	}
}

// crashAfter is a backend that dies (panics, as a killed process stops) at
// its k-th MIG change, before making it.
type crashAfter struct {
	mig.Backend
	k, n int
}

type crashed struct{}

func (c *crashAfter) step() {
	if c.n == c.k {
		panic(crashed{})
	}
	c.n++
}

func (c *crashAfter) SetMIGMode(ctx context.Context, index int, enabled bool) error {
	c.step()
	return c.Backend.SetMIGMode(ctx, index, enabled)
}

func (c *crashAfter) CreateMIGDevice(ctx context.Context, index int, profile string, start int) (gpu.MIGDevice, error) {
	c.step()
	return c.Backend.CreateMIGDevice(ctx, index, profile, start)
}

func (c *crashAfter) DestroyMIGDevice(ctx context.Context, index int, gpuInstanceID int) error {
	c.step()
	return c.Backend.DestroyMIGDevice(ctx, index, gpuInstanceID)
}

// applyUntilCrash runs Apply over a backend that dies before its k-th MIG
// change; it reports whether the crash happened.
func applyUntilCrash(t *testing.T, b mig.Backend, journal string, p *mig.Plan, k int) (died bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crashed); !ok {
				panic(r)
			}
			died = true
		}
	}()
	if _, err := mig.NewApplier(&crashAfter{Backend: b, k: k}, journal).Apply(ctx(t), p); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return false
}

// TestRecoverAfterKill kills the apply before each of its steps (on an
// 8-GPU machine, where the apply changes GPU after GPU) and checks that a new
// applier with the same journal rolls every GPU back to its previous layout.
func TestRecoverAfterKill(t *testing.T) {
	f := exampleFile(t, gpuOperatorDefaults)
	for _, c := range []struct{ machine, from, to string }{
		{"dgx-a100", "all-balanced", "all-1g.5gb"},
		{"dgx-h100", "all-disabled", "all-balanced"},
		{"dgx-h100", "all-3g.40gb", "all-disabled"},
	} {
		for k := 0; ; k++ {
			name := fmt.Sprintf("%s/%s to %s/killed before step %d", c.machine, c.from, c.to, k)
			done := false
			t.Run(name, func(t *testing.T) {
				b := newSim(t, c.machine)
				applyConfig(t, b, f, c.from)
				before := discover(t, b)
				p := mustPlan(t, f, c.to, before)
				journal := filepath.Join(t.TempDir(), "state", "mig-journal.json")
				if !applyUntilCrash(t, b, journal, p, k) {
					done = true // k is past the last step: the apply completed
					checkApplied(t, b, f, c.to, p, discover(t, b))
					return
				}
				if _, err := os.Stat(journal); err != nil {
					t.Fatalf("no journal after the kill: %v", err)
				}
				// The restarted agent: a new applier on the same journal.
				a := mig.NewApplier(b, journal)
				rec, err := a.Recover(ctx(t))
				if err != nil {
					t.Fatal(err)
				}
				if rec.Empty() || rec.Config != c.to {
					t.Errorf("Recover reported %s, want gpus of config %s", rec, c.to)
				}
				after := discover(t, b)
				if !sameLayouts(layouts(before), layouts(after)) {
					t.Errorf("after Recover:\n%v\nwant the previous layouts:\n%v", layouts(after), layouts(before))
				}
				if _, err := os.Stat(journal); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("journal left after Recover: %v", err)
				}
				if rec, err := a.Recover(ctx(t)); err != nil || !rec.Empty() {
					t.Errorf("second Recover: %s, %v; want nothing to do", rec, err)
				}
				// The config applies cleanly afterwards.
				applyConfig(t, b, f, c.to)
			})
			if done || t.Failed() {
				break
			}
		}
	}
}

func TestRecoverWithoutJournal(t *testing.T) {
	b := newSim(t, "dgx-a100")
	for _, path := range []string{"", filepath.Join(t.TempDir(), "none.json")} {
		rec, err := mig.NewApplier(b, path).Recover(ctx(t))
		if err != nil || !rec.Empty() {
			t.Errorf("Recover with journal %q: %s, %v; want nothing to do", path, rec, err)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version": 1, "config": "x", "gpus": [], "extra": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mig.NewApplier(b, bad).Recover(ctx(t)); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Recover of a corrupt journal: %v, want an error naming %s", err, bad)
	}
}

// TestApplyInitsNVMLOnce checks that applying and recovering reuse the
// backend's NVML session: one Init for the process, however many applies.
func TestApplyInitsNVMLOnce(t *testing.T) {
	f := exampleFile(t, gpuOperatorDefaults)
	b := newSim(t, "dgx-h100")
	for _, name := range []string{"all-1g.10gb", "all-balanced", "all-7g.80gb", "all-disabled"} {
		applyConfig(t, b, f, name)
	}
	if _, err := mig.NewApplier(b, filepath.Join(t.TempDir(), "j.json")).Recover(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n := b.Sim.Calls("Init") + b.Sim.Calls("InitWithFlags"); n != 1 {
		t.Errorf("NVML initialised %d times, want 1", n)
	}
	if n := b.Sim.Calls("Shutdown"); n != 0 {
		t.Errorf("NVML shut down %d times during applies, want 0", n)
	}
}

func TestApplyCancelledContextRollsBack(t *testing.T) {
	f := exampleFile(t, gpuOperatorDefaults)
	b := newSim(t, "dgx-a100")
	applyConfig(t, b, f, "all-balanced")
	before := discover(t, b)
	p := mustPlan(t, f, "all-3g.20gb", before)
	cctx, cancel := context.WithCancel(ctx(t))
	// Cancel at the fourth MIG change, as a shutdown signal would.
	_, err := mig.NewApplier(&cancelAt{Backend: b, k: 3, cancel: cancel}, "").Apply(cctx, p)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if !sameLayouts(layouts(before), layouts(discover(t, b))) {
		t.Errorf("after a cancelled apply: %v, want %v", layouts(discover(t, b)), layouts(before))
	}
}

// cancelAt cancels the apply's context before its k-th MIG change.
type cancelAt struct {
	mig.Backend
	k, n   int
	cancel context.CancelFunc
}

func (c *cancelAt) step() {
	if c.n == c.k {
		c.cancel()
	}
	c.n++
}

func (c *cancelAt) SetMIGMode(ctx context.Context, index int, enabled bool) error {
	c.step()
	return c.Backend.SetMIGMode(ctx, index, enabled)
}

func (c *cancelAt) CreateMIGDevice(ctx context.Context, index int, profile string, start int) (gpu.MIGDevice, error) {
	c.step()
	return c.Backend.CreateMIGDevice(ctx, index, profile, start)
}

func (c *cancelAt) DestroyMIGDevice(ctx context.Context, index int, gpuInstanceID int) error {
	c.step()
	return c.Backend.DestroyMIGDevice(ctx, index, gpuInstanceID)
}

// TestRecoverSkipsGoneGPUs recovers a journal on a machine whose GPUs are not
// the journal's (replaced hardware): nothing to restore, and the journal must
// not block later applies.
func TestRecoverSkipsGoneGPUs(t *testing.T) {
	f := exampleFile(t, gpuOperatorDefaults)
	b := newSim(t, "dgx-h100")
	p := mustPlan(t, f, "all-balanced", discover(t, b))
	journal := filepath.Join(t.TempDir(), "mig-journal.json")
	if !applyUntilCrash(t, b, journal, p, 3) {
		t.Fatal("the apply did not reach its fourth step")
	}
	m, err := sim.Open("dgx-h100", sim.WithName("replaced"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName("sim:replaced"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	before := discover(t, other)
	rec, err := mig.NewApplier(other, journal).Recover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.GPUs) != 1 || !rec.GPUs[0].Gone || !strings.Contains(rec.String(), "gpu 0 ("+p.GPUs[0].UUID+") is gone, skipped") {
		t.Errorf("Recover reported %s, want gpu 0 gone", rec)
	}
	if !sameLayouts(layouts(before), layouts(discover(t, other))) {
		t.Error("Recover changed the GPUs of another machine")
	}
	if _, err := os.Stat(journal); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left: %v", err)
	}
}
