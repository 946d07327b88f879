package mig

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// ErrUnknownConfig is wrapped by the error for a config name the file lacks.
var ErrUnknownConfig = errors.New("unknown mig config")

// ErrInvalidLayout is wrapped by the error for a config that does not fit the machine.
var ErrInvalidLayout = errors.New("mig config does not fit this machine")

// Plan is what applying a named config to a machine changes, per GPU.
type Plan struct {
	// Config is the config name; Source the file it came from.
	Config string
	Source string
	// Backend names the backend of the machine planned for ("sim:dgx-h100").
	Backend string
	// GPUs has one entry per discovered GPU, in index order.
	GPUs []GPUPlan
}

// GPUPlan is the plan for one GPU.
type GPUPlan struct {
	Index       int
	UUID        string
	Product     string
	PCIDeviceID uint32
	// Selected reports whether an entry of the config selects this GPU. An
	// unselected GPU is left as it is (Desired equals Current).
	Selected bool
	Current  Layout
	// Desired has explicit placements. When Current satisfies it (same mode
	// and profile counts), Desired is Current and nothing changes.
	Desired Layout
	// Destroy are the current instances to destroy, Create the instances to
	// create (with placements); instances in both layouts at the same
	// placement are kept.
	Destroy []Instance
	Create  []Instance
}

// Changed reports whether applying the plan touches this GPU.
func (g GPUPlan) Changed() bool {
	return g.ModeChange() || len(g.Destroy) > 0 || len(g.Create) > 0
}

// ModeChange reports whether the MIG mode is set: it changes, or a pending
// change to the other mode is cancelled.
func (g GPUPlan) ModeChange() bool {
	return g.Selected && (g.Current.MIGEnabled != g.Desired.MIGEnabled || g.Current.MIGPendingReset)
}

// NewPlan validates config name of f against machine m and plans every GPU.
// It touches no hardware. Its error is a *PlanError listing every problem
// found (naming config, GPU, profile and reason), wrapping ErrUnknownConfig
// or ErrInvalidLayout.
func NewPlan(f *File, name string, m *gpu.Machine) (*Plan, error) {
	entries, ok := f.Configs[name]
	if !ok {
		return nil, &PlanError{Config: name, Source: f.Source, Unknown: true, Problems: []Problem{{
			GPU:    -1,
			Reason: fmt.Sprintf("the file has no config of that name (it has: %s)", strings.Join(f.Names(), ", ")),
		}}}
	}
	perr := &PlanError{Config: name, Source: f.Source}
	selected := selectGPUs(entries, m, perr)
	p := &Plan{Config: name, Source: f.Source, Backend: m.Backend}
	for _, d := range m.Devices {
		g := GPUPlan{
			Index: d.Index, UUID: d.UUID, Product: d.Product, PCIDeviceID: d.PCIDeviceID,
			Current: LayoutOf(d),
		}
		g.Desired = g.Current
		if ei, ok := selected[d.Index]; ok {
			g.Selected = true
			desired, problems := planGPU(d, entries[ei], g.Current)
			if len(problems) > 0 {
				perr.Problems = append(perr.Problems, problems...)
			} else {
				g.Desired = desired
				g.Destroy, g.Create = diff(g.Current, g.Desired)
			}
		}
		p.GPUs = append(p.GPUs, g)
	}
	if len(perr.Problems) > 0 {
		slices.SortStableFunc(perr.Problems, func(a, b Problem) int { return cmp.Compare(a.GPU, b.GPU) })
		return nil, perr
	}
	return p, nil
}

// selectGPUs maps each GPU index to the entry that selects it, recording
// entries that name missing GPUs and GPUs selected twice.
func selectGPUs(entries []Entry, m *gpu.Machine, perr *PlanError) map[int]int {
	byIndex := map[int]gpu.Device{}
	for _, d := range m.Devices {
		byIndex[d.Index] = d
	}
	failed := map[int]gpu.DeviceFailure{}
	for _, f := range m.Failed {
		failed[f.Index] = f
	}
	selected := map[int]int{}
	pick := func(ei, index int) {
		if prev, ok := selected[index]; ok {
			perr.Problems = append(perr.Problems, Problem{GPU: index, Reason: fmt.Sprintf(
				"selected by both %s and %s of the config; an entry must select each gpu at most once",
				entryName(entries, prev), entryName(entries, ei))})
			return
		}
		selected[index] = ei
	}
	for ei, e := range entries {
		if e.Devices.All {
			for _, d := range m.Devices {
				if e.DeviceFilter.Matches(d.PCIDeviceID) {
					pick(ei, d.Index)
				}
			}
			if len(e.DeviceFilter) == 0 {
				for _, f := range m.Failed {
					perr.Problems = append(perr.Problems, unreadable(entries, ei, f))
				}
			}
			continue
		}
		for _, index := range e.Devices.Indices {
			d, ok := byIndex[index]
			switch {
			case ok && e.DeviceFilter.Matches(d.PCIDeviceID):
				pick(ei, index)
			case ok:
			case isFailed(failed, index):
				perr.Problems = append(perr.Problems, unreadable(entries, ei, failed[index]))
			default:
				perr.Problems = append(perr.Problems, Problem{GPU: index, Reason: fmt.Sprintf(
					"%s names device index %d, which does not exist (this machine has %s)",
					entryName(entries, ei), index, gpuRange(m))})
			}
		}
	}
	return selected
}

func isFailed(failed map[int]gpu.DeviceFailure, index int) bool {
	_, ok := failed[index]
	return ok
}

func unreadable(entries []Entry, ei int, f gpu.DeviceFailure) Problem {
	return Problem{GPU: f.Index, Reason: fmt.Sprintf("selected by %s but could not be read: %v", entryName(entries, ei), f.Err)}
}

func entryName(entries []Entry, ei int) string {
	if l := entries[ei].Line; l > 0 {
		return fmt.Sprintf("entry %d (line %d)", ei+1, l)
	}
	return fmt.Sprintf("entry %d", ei+1)
}

func gpuRange(m *gpu.Machine) string {
	n := len(m.Devices) + len(m.Failed)
	switch n {
	case 0:
		return "no gpus"
	case 1:
		return "gpu 0 only"
	}
	return fmt.Sprintf("gpus 0 to %d", n-1)
}

// planGPU validates entry e against GPU d and returns the desired layout with
// placements: current itself when current already satisfies e.
func planGPU(d gpu.Device, e Entry, current Layout) (Layout, []Problem) {
	if !e.MIGEnabled {
		return Layout{}, nil
	}
	var problems []Problem
	add := func(profile, format string, args ...any) {
		problems = append(problems, Problem{GPU: d.Index, Profile: profile, Reason: fmt.Sprintf(format, args...)})
	}
	if !d.MIGCapable {
		add("", "mig-enabled is true but this %s is not mig capable", d.Product)
		return Layout{}, problems
	}
	want := Layout{MIGEnabled: true}
	g, err := newGeometry(d.MIGProfiles)
	if err != nil {
		add("", "%v", err)
		return Layout{}, problems
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n, c := range e.MIGDevices {
			if c > 0 && !yield(n) {
				return
			}
		}
	})
	var items []gpu.MIGProfileInfo
	for _, name := range names {
		count := e.MIGDevices[name]
		p, ok := g.byName[name]
		switch {
		case strings.Contains(name, "c."):
			add(name, "compute-instance profiles are not supported; Tessera creates one compute instance spanning each gpu instance (use %s)", name[strings.Index(name, "c.")+2:])
			continue
		case !ok:
			add(name, "this %s does not offer the profile (it offers: %s)", d.Product, strings.Join(g.names(), ", "))
			continue
		case count > p.MaxInstances:
			add(name, "%d instances requested, this %s holds at most %d", count, d.Product, p.MaxInstances)
			continue
		}
		for range count {
			items = append(items, p)
			want.Instances = append(want.Instances, Instance{Profile: name})
		}
	}
	if len(problems) > 0 {
		return Layout{}, problems
	}
	if current.Satisfies(want) {
		return current, nil
	}
	compute, memory := 0, 0
	for _, p := range items {
		compute += p.SliceCount
		memory += p.Placements[0].Size
	}
	summary := summarize(e.MIGDevices, names)
	switch {
	case compute > g.computeSlices:
		for _, p := range items {
			if p.SliceCount >= g.computeSlices && len(items) > 1 {
				add(p.Name, "%s takes the whole gpu and cannot be combined with other instances (requested: %s)", p.Name, summary)
				return Layout{}, problems
			}
		}
		add(summary, "the instances need %d compute slices, this %s has %d", compute, d.Product, g.computeSlices)
		return Layout{}, problems
	case memory > g.memorySlices:
		add(summary, "the instances need %d memory slices, this %s has %d", memory, d.Product, g.memorySlices)
		return Layout{}, problems
	}
	placed, ok := g.place(items, current)
	if !ok {
		add(summary, "no set of legal placements on this %s holds all the instances", d.Product)
		return Layout{}, problems
	}
	return placed, nil
}

func summarize(counts map[string]int, names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%d×%s", counts[n], n)
	}
	return strings.Join(parts, " + ")
}

// diff returns the instances of current to destroy and of desired to create
// to go from current to desired; instances at the same place in both stay.
func diff(current, desired Layout) (destroy, create []Instance) {
	if !current.MIGEnabled {
		return nil, slices.Clone(desired.Instances)
	}
	if !desired.MIGEnabled {
		return slices.Clone(current.Instances), nil
	}
	for _, c := range current.Instances {
		if !slices.ContainsFunc(desired.Instances, c.sameSlot) {
			destroy = append(destroy, c)
		}
	}
	for _, d := range desired.Instances {
		if !slices.ContainsFunc(current.Instances, d.sameSlot) {
			create = append(create, d)
		}
	}
	return destroy, create
}

// geometry is one GPU's MIG profiles, for placing a layout.
type geometry struct {
	byName map[string]gpu.MIGProfileInfo
	// largest holds the profiles largest first (slice count, then memory
	// size, then name), with placements earliest-ending first.
	largest                     []gpu.MIGProfileInfo
	memorySlices, computeSlices int
}

func newGeometry(profiles []gpu.MIGProfileInfo) (*geometry, error) {
	if len(profiles) == 0 {
		return nil, errors.New("the gpu reports no mig profiles")
	}
	g := &geometry{byName: map[string]gpu.MIGProfileInfo{}}
	for _, p := range profiles {
		if len(p.Placements) == 0 {
			continue
		}
		for _, pl := range p.Placements {
			if pl.Start < 0 || pl.Size < 1 || pl.Start+pl.Size > 64 {
				return nil, fmt.Errorf("mig profile %s has placement %s, outside the 64 memory slices supported", p.Name, pl)
			}
			g.memorySlices = max(g.memorySlices, pl.Start+pl.Size)
		}
		g.computeSlices = max(g.computeSlices, p.SliceCount)
		g.byName[p.Name] = p
		q := p
		q.Placements = slices.Clone(p.Placements)
		slices.SortStableFunc(q.Placements, func(a, b gpu.Placement) int { return cmp.Compare(a.Start+a.Size, b.Start+b.Size) })
		g.largest = append(g.largest, q)
	}
	slices.SortStableFunc(g.largest, largestFirst)
	return g, nil
}

func largestFirst(a, b gpu.MIGProfileInfo) int {
	if c := cmp.Compare(b.SliceCount, a.SliceCount); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Placements[0].Size, a.Placements[0].Size); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// names lists the profiles smallest first (slice count, memory, name).
func (g *geometry) names() []string {
	ps := slices.Clone(g.largest)
	slices.SortFunc(ps, func(a, b gpu.MIGProfileInfo) int {
		if c := cmp.Compare(a.SliceCount, b.SliceCount); c != 0 {
			return c
		}
		if c := cmp.Compare(a.MemoryMiB, b.MemoryMiB); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

func mask(p gpu.Placement) uint64 { return (uint64(1)<<p.Size - 1) << p.Start }

// place finds legal, non-overlapping placements for items. Of all the ways,
// it picks the one that leaves the most room: the most instances of each
// profile that still fit in the free memory and compute slices (compared
// largest profile first), then the longest run of free memory slices, then
// the most instances kept where current has them, then the lowest starts.
func (g *geometry) place(items []gpu.MIGProfileInfo, current Layout) (Layout, bool) {
	items = slices.Clone(items)
	slices.SortStableFunc(items, largestFirst)
	s := &search{g: g, items: items, current: current, pick: make([]int, len(items))}
	s.walk(0, 0)
	if s.best == nil {
		return Layout{}, false
	}
	l := Layout{MIGEnabled: true}
	for i, p := range items {
		l.Instances = append(l.Instances, Instance{Profile: p.Name, Placement: p.Placements[s.best[i]]})
	}
	sortInstances(l.Instances)
	return l, true
}

type search struct {
	g       *geometry
	items   []gpu.MIGProfileInfo
	current Layout
	pick    []int // placement index per item

	best      []int
	bestScore score
}

type score struct {
	capacity []int
	run      int
	kept     int
}

func (a score) better(b score) bool {
	if c := slices.Compare(a.capacity, b.capacity); c != 0 {
		return c > 0
	}
	if a.run != b.run {
		return a.run > b.run
	}
	return a.kept > b.kept
}

func (s *search) walk(i int, used uint64) {
	if i == len(s.items) {
		s.leaf(used)
		return
	}
	p := s.items[i]
	first := 0
	if i > 0 && s.items[i-1].Name == p.Name {
		first = s.pick[i-1] + 1 // same profile: ascending placements only
	}
	for j := first; j < len(p.Placements); j++ {
		m := mask(p.Placements[j])
		if m&used != 0 {
			continue
		}
		s.pick[i] = j
		s.walk(i+1, used|m)
	}
}

func (s *search) leaf(used uint64) {
	sc := score{}
	counts := map[string]int{}
	compute := 0
	for i, p := range s.items {
		counts[p.Name]++
		compute += p.SliceCount
		pl := p.Placements[s.pick[i]]
		if slices.ContainsFunc(s.current.Instances, func(c Instance) bool { return c.Profile == p.Name && c.Placement == pl }) {
			sc.kept++
		}
	}
	all := uint64(1)<<s.g.memorySlices - 1
	free := all &^ used
	for _, p := range s.g.largest {
		n, left, room := 0, free, s.g.computeSlices-compute
		for _, pl := range p.Placements {
			if counts[p.Name]+n >= p.MaxInstances || room < p.SliceCount {
				break
			}
			if m := mask(pl); left&m == m {
				n++
				left &^= m
				room -= p.SliceCount
			}
		}
		sc.capacity = append(sc.capacity, n)
	}
	for run := 0; free != 0; {
		free >>= bits.TrailingZeros64(free)
		run = bits.TrailingZeros64(^free)
		sc.run = max(sc.run, run)
		free >>= run
	}
	if s.best == nil || sc.better(s.bestScore) {
		s.best, s.bestScore = slices.Clone(s.pick), sc
	}
}

// Changed returns the plans of the GPUs that change, in index order.
func (p *Plan) Changed() []GPUPlan {
	var out []GPUPlan
	for _, g := range p.GPUs {
		if g.Changed() {
			out = append(out, g)
		}
	}
	return out
}

// Empty reports whether the plan changes no GPU.
func (p *Plan) Empty() bool {
	return len(p.Changed()) == 0
}

// AffectedUUIDs returns, for every GPU that changes, the GPU's UUID and the
// UUIDs of the MIG devices that will be destroyed: a pod holding any of them
// must be gone before the plan is applied. MIG devices kept as they are (same
// profile at the same placement) are not listed.
func (p *Plan) AffectedUUIDs() []string {
	var out []string
	for _, g := range p.Changed() {
		out = append(out, g.UUID)
		for _, in := range g.Destroy {
			if in.UUID != "" {
				out = append(out, in.UUID)
			}
		}
	}
	return out
}

// Summary describes the plan on one line, for Events and logs: the GPUs that
// change, grouped by their desired layout, and how many stay as they are:
// `mig config "all-balanced": gpus 0-7 to mig enabled: 2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4`.
func (p *Plan) Summary() string {
	var order []string
	gpus := map[string][]int{}
	same := 0
	for _, g := range p.GPUs {
		if !g.Changed() {
			same++
			continue
		}
		d := g.Desired.String()
		if _, ok := gpus[d]; !ok {
			order = append(order, d)
		}
		gpus[d] = append(gpus[d], g.Index)
	}
	parts := make([]string, 0, len(order)+1)
	for _, d := range order {
		noun := "gpus"
		if len(gpus[d]) == 1 {
			noun = "gpu"
		}
		parts = append(parts, fmt.Sprintf("%s %s to %s", noun, indexRanges(gpus[d]), d))
	}
	switch {
	case len(order) == 0:
		parts = append(parts, "no gpu changes")
	case same > 0:
		parts = append(parts, fmt.Sprintf("%d other gpus unchanged", same))
	}
	return fmt.Sprintf("mig config %q: %s", p.Config, strings.Join(parts, "; "))
}

// String renders the plan as Write does.
func (p *Plan) String() string {
	var b strings.Builder
	_ = p.Write(&b)
	return b.String()
}

// Write writes a human-readable description of the plan, one block per GPU.
func (p *Plan) Write(w io.Writer) error {
	changed := len(p.Changed())
	unselected := 0
	for _, g := range p.GPUs {
		if !g.Selected {
			unselected++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mig config %q (%s) on %s: %d of %d gpus change", p.Config, p.Source, p.Backend, changed, len(p.GPUs))
	if unselected > 0 {
		fmt.Fprintf(&b, ", %d not selected", unselected)
	}
	b.WriteString("\n")
	for _, g := range p.GPUs {
		fmt.Fprintf(&b, "  gpu %d %s %s (%s): ", g.Index, g.UUID, g.Product, FormatDeviceID(g.PCIDeviceID))
		switch {
		case !g.Selected:
			fmt.Fprintf(&b, "not selected by the config, left as is: %s\n", g.Current)
			continue
		case !g.Changed():
			fmt.Fprintf(&b, "unchanged: %s\n", g.Current)
			continue
		}
		fmt.Fprintf(&b, "change\n    current: %s\n    desired: %s\n", g.Current, g.Desired)
		for _, step := range steps(g.Current, g.Desired) {
			fmt.Fprintf(&b, "    - %s\n", step.describe())
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Problem is one reason a config cannot apply.
type Problem struct {
	// GPU is the GPU index, -1 when the problem is not about one GPU.
	GPU int
	// Profile is the MIG profile concerned, if any.
	Profile string
	// Reason says what is wrong.
	Reason string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.GPU >= 0 {
		fmt.Fprintf(&b, "gpu %d: ", p.GPU)
	}
	if p.Profile != "" {
		fmt.Fprintf(&b, "%s: ", p.Profile)
	}
	b.WriteString(p.Reason)
	return b.String()
}

// PlanError lists every problem found validating a config against a machine.
type PlanError struct {
	Config   string
	Source   string
	Problems []Problem
	// Unknown is set when the config name is not in the file.
	Unknown bool
}

func (e *PlanError) Error() string {
	var b strings.Builder
	if e.Unknown {
		fmt.Fprintf(&b, "unknown mig config %q in %s", e.Config, e.Source)
	} else {
		fmt.Fprintf(&b, "mig config %q in %s cannot be applied", e.Config, e.Source)
	}
	for _, l := range e.Lines() {
		b.WriteString("; ")
		b.WriteString(l)
	}
	return b.String()
}

// Lines describes the problems, one line each, with the problems that differ
// only in the GPU merged into one: "gpus 0-7: 1g.5gb: this ... does not offer
// the profile ...".
func (e *PlanError) Lines() []string {
	type key struct{ profile, reason string }
	var order []key
	gpus := map[key][]int{}
	for _, p := range e.Problems {
		k := key{p.Profile, p.Reason}
		if _, ok := gpus[k]; !ok {
			order = append(order, k)
		}
		gpus[k] = append(gpus[k], p.GPU)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		var b strings.Builder
		switch idx := gpus[k]; {
		case len(idx) == 1 && idx[0] < 0:
		case len(idx) == 1:
			fmt.Fprintf(&b, "gpu %d: ", idx[0])
		default:
			fmt.Fprintf(&b, "gpus %s: ", indexRanges(idx))
		}
		if k.profile != "" {
			fmt.Fprintf(&b, "%s: ", k.profile)
		}
		b.WriteString(k.reason)
		out = append(out, b.String())
	}
	return out
}

// indexRanges writes ascending indices as "0-3, 5, 7-8".
func indexRanges(idx []int) string {
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", idx[i], idx[j]))
		} else {
			parts = append(parts, fmt.Sprint(idx[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// Unwrap returns ErrUnknownConfig or ErrInvalidLayout.
func (e *PlanError) Unwrap() error {
	if e.Unknown {
		return ErrUnknownConfig
	}
	return ErrInvalidLayout
}
