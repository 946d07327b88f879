package replay

import (
	"context"
	"errors"
	"fmt"
	"math"
	oldrand "math/rand"
	"math/rand/v2"
	"slices"

	"github.com/tessera-gpu/tessera/pkg/scoring"
	"github.com/tessera-gpu/tessera/pkg/topology"
)

// Stranded is free GPU capacity, in GPUs, left at the end of a run that a
// pod kind which failed during the run wanted (a GPU of the mode it asks
// for: whole, MIG or shared) but could not use, by the first cause that
// explains it:
//   - CPU: a failed kind could use it if its node had the CPU or memory left;
//   - Product: a failed kind could use it if its allowed products included
//     the GPU's (product-constrained);
//   - MIGGeometry: free MIG slices, none of the profile a failed MIG kind
//     asks for;
//   - ShareSliver: shared GPUs with fewer free units than a failed kind
//     asks for;
//   - SetSize: free whole GPUs, too few on their node for a failed kind.
//
// Pods never leave, so a kind that failed once fits nowhere at the end.
// Free capacity that no failed kind wanted is not stranded: it is supply
// the workload did not run out of.
type Stranded struct {
	CPU         float64 `json:"cpu"`
	Product     float64 `json:"product"`
	MIGGeometry float64 `json:"migGeometry"`
	ShareSliver float64 `json:"shareSliver"`
	SetSize     float64 `json:"setSize"`
}

// Total is the stranded capacity of every cause.
func (s Stranded) Total() float64 {
	return s.CPU + s.Product + s.MIGGeometry + s.ShareSliver + s.SetSize
}

// ScenarioResult is one replay of a scenario under a policy and seed.
type ScenarioResult struct {
	Scenario string `json:"scenario"`
	Policy   string `json:"policy"`
	Seed     int64  `json:"seed"`
	Pods     int    `json:"pods"`
	Placed   int    `json:"placed"`
	Failed   int    `json:"failed"`
	// FailedByKind counts the pods that fit no node, by pod kind.
	FailedByKind map[string]int `json:"failedByKind"`
	// CapacityGPUs is the scenarioCluster's GPU capacity; AllocatedGPUs what the
	// placed pods hold at the end (a MIG slice counts its compute slices, a
	// share its units, over the GPU's).
	CapacityGPUs  float64 `json:"capacityGpus"`
	AllocatedGPUs float64 `json:"allocatedGpus"`
	// MultiGPU counts placed pods of 2 or more whole GPUs, BestInterconnect
	// those whose set is as well connected (topology.Quality) as the best
	// set any feasible node offered at that moment.
	MultiGPU         int `json:"multiGpu"`
	BestInterconnect int `json:"bestInterconnect"`
	// NVLinkAvailable counts multi-GPU pods for which some feasible node
	// offered a set whose every pair is NVLinked, NVLinked those of them
	// that got such a set.
	NVLinkAvailable int `json:"nvlinkAvailable"`
	NVLinked        int `json:"nvlinked"`
	// PremiumPods and PremiumGPUs count placed pods, and their GPUs, put on a
	// product that costs more than another feasible node's allowed product
	// at that moment (the pod did not need it); for a pod that got an
	// all-NVLink set, only nodes that offered one count.
	PremiumPods int      `json:"premiumPods"`
	PremiumGPUs float64  `json:"premiumGpus"`
	FreeGPUs    float64  `json:"freeGpus"`
	Stranded    Stranded `json:"stranded"`
}

// AllocPct is the allocated share of the GPU capacity, in percent.
func (r *ScenarioResult) AllocPct() float64 { return 100 * r.AllocatedGPUs / r.CapacityGPUs }

// BestInterconnectPct is the share of multi-GPU pods on the best
// interconnect available, in percent (100 when there were none).
func (r *ScenarioResult) BestInterconnectPct() float64 {
	if r.MultiGPU == 0 {
		return 100
	}
	return 100 * float64(r.BestInterconnect) / float64(r.MultiGPU)
}

type scenarioCluster struct {
	nodes  []*scoring.NodeCache
	scorer *scoring.Scorer
	maxCPU int64
	maxGPU float64
	total  float64
}

func buildScenarioCluster(sc *Scenario) (*scenarioCluster, error) {
	s, err := scoring.NewScorer(scoring.DefaultConfig())
	if err != nil {
		return nil, err
	}
	c := &scenarioCluster{scorer: s}
	for _, g := range sc.Nodes {
		m, err := LookupMachine(g.Machine)
		if err != nil {
			return nil, fmt.Errorf("node group %s: %w", g.Name, err)
		}
		for i := range g.Count {
			st, err := g.nodeState(fmt.Sprintf("%s-%d", g.Name, i), m)
			if err != nil {
				return nil, err
			}
			n, err := s.NewNode(st)
			if err != nil {
				return nil, err
			}
			total, _ := n.Capacity()
			c.total += total
			c.maxGPU = max(c.maxGPU, total)
			c.maxCPU = max(c.maxCPU, g.CPU)
			c.nodes = append(c.nodes, n)
		}
	}
	return c, nil
}

// scenarioArrivals draws pod kinds by weight until their GPU demand reaches load
// times capacity. A kind's demand is its GPUs, its MIG slice's compute
// slices over the GPU's (per the first machine offering the profile), or its
// share units over the scenario's largest ShareUnits.
func scenarioArrivals(sc *Scenario, capacity float64, rng *rand.Rand) ([]int, error) {
	demand := make([]float64, len(sc.Pods))
	units := 0
	for _, g := range sc.Nodes {
		units = max(units, g.ShareUnits)
	}
	sum := 0.0
	for i, p := range sc.Pods {
		d := &p.Demand
		switch d.Kind() {
		case scoring.KindWhole:
			demand[i] = float64(d.GPUs)
		case scoring.KindShare:
			if units == 0 {
				return nil, fmt.Errorf("pod kind %s asks for share units, no node group is time-shared", p.Name)
			}
			demand[i] = float64(d.ShareUnits) / float64(units)
		case scoring.KindMIG:
			f, err := migFraction(d.MIGProfile)
			if err != nil {
				return nil, fmt.Errorf("pod kind %s: %w", p.Name, err)
			}
			demand[i] = f
		}
		sum += p.Weight
	}
	var out []int
	for got := 0.0; got < sc.Load*capacity; {
		x := rng.Float64() * sum
		k := 0
		for k < len(sc.Pods)-1 && x >= sc.Pods[k].Weight {
			x -= sc.Pods[k].Weight
			k++
		}
		out = append(out, k)
		got += demand[k]
		if len(out) > 10_000_000 {
			return nil, errors.New("the workload asks for no gpu: scenarioArrivals never reach the load")
		}
	}
	return out, nil
}

func migFraction(profile string) (float64, error) {
	for _, name := range machineNames {
		m, err := LookupMachine(name)
		if err != nil {
			return 0, err
		}
		for _, ps := range m.MIGProfiles {
			maxSlices := 0
			for _, p := range ps {
				maxSlices = max(maxSlices, p.SliceCount)
			}
			for _, p := range ps {
				if p.Name == profile {
					return float64(p.SliceCount) / float64(maxSlices), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no machine offers mig profile %q", profile)
}

// RunScenario replays scenario sc under policy p with seed: the scenarioArrivals come from
// a stream seeded by seed alone, so every policy sees the same pods.
func RunScenario(ctx context.Context, sc *Scenario, p Policy, seed int64) (*ScenarioResult, error) {
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	c, err := buildScenarioCluster(sc)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	kinds, err := scenarioArrivals(sc, c.total, rand.New(rand.NewPCG(uint64(seed), 0x5ce7a210)))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	reqs := make([]*scoring.Request, len(sc.Pods))
	for i, k := range sc.Pods {
		if reqs[i], err = c.scorer.Compile(k.Demand); err != nil {
			return nil, fmt.Errorf("scenario %s pod kind %s: %w", sc.Name, k.Name, err)
		}
	}
	pods := make([]Pod, len(sc.Pods))
	for k, kind := range sc.Pods {
		pods[k] = Pod{Name: kind.Name, CPU: kind.Demand.CPU, Memory: kind.Demand.Memory, Class: k, Request: reqs[k]}
	}
	run := &Run{Nodes: c.nodes, Scorer: c.scorer, Rand: oldrand.New(oldrand.NewSource(seed ^ 0x9011c7)), MaxCPU: c.maxCPU, MaxGPU: c.maxGPU}
	scorer := p.NewScorer(run)
	dev, ok := scorer.(Devicer)
	if !ok {
		return nil, fmt.Errorf("scenario %s: policy %s cannot choose devices on nodes with MIG slices and links: allowed policies are %s", sc.Name, p.Name(), policyNames(ScenarioPolicies()))
	}
	pre, _ := scorer.(PreScorer)
	obs, _ := scorer.(Observer)
	res := &ScenarioResult{Scenario: sc.Name, Policy: p.Name(), Seed: seed, Pods: len(kinds), CapacityGPUs: c.total, FailedByKind: map[string]int{}}
	products := c.scorer.Config().Products
	var cands []candidate
	var feasible []int
	failed := make([]bool, len(reqs))
	for i, k := range kinds {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		r := reqs[k]
		c.scorer.Observe(r)
		cands, feasible = cands[:0], feasible[:0]
		for ni, n := range c.nodes {
			if sr := c.scorer.Score(n, r); sr.Err == nil {
				cands = append(cands, candidate{Node: ni, Result: sr})
				feasible = append(feasible, ni)
			}
		}
		if len(cands) == 0 {
			res.Failed++
			res.FailedByKind[sc.Pods[k].Name]++
			failed[k] = true
			continue
		}
		// The policy's best node, ties to the lowest.
		pod := &pods[k]
		if pre != nil {
			pre.PreScore(pod, feasible)
		}
		ci, bestScore := 0, int64(0)
		for i, ni := range feasible {
			if v := scorer.Score(pod, ni); i == 0 || v > bestScore {
				ci, bestScore = i, v
			}
		}
		a := dev.Devices(pod, feasible[ci])
		n := c.nodes[cands[ci].Node]
		if r.Kind() == scoring.KindWhole && r.Demand.GPUs >= 2 {
			res.MultiGPU++
			best := cands[0].Result.Quality
			for _, cd := range cands[1:] {
				if cd.Result.Quality.Better(best) {
					best = cd.Result.Quality
				}
			}
			q, err := n.Allocator().Quality(a.GPUs)
			if err != nil {
				return nil, fmt.Errorf("policy %s chose gpus %v on %s: %w", p.Name(), a.GPUs, n.State().Name, err)
			}
			if q.Compare(best) >= 0 {
				res.BestInterconnect++
			}
			if best.MinNVLinks > 0 {
				res.NVLinkAvailable++
				if q.MinNVLinks > 0 {
					res.NVLinked++
				}
			}
		}
		if len(a.GPUs) > 0 {
			// A cheaper candidate would have served the pod unless the pod
			// got an all-NVLink set and the candidate's set is not one.
			nvlinked := r.Kind() == scoring.KindWhole && r.Demand.GPUs >= 2 && setQuality(n, a).MinNVLinks > 0
			lo := math.Inf(1)
			for _, cd := range cands {
				if nvlinked && cd.Result.Quality.MinNVLinks == 0 {
					continue
				}
				cost, _ := products.Cost(c.nodes[cd.Node].State().GPUs[cd.Result.Assignment.GPUs[0]].Product)
				lo = min(lo, cost)
			}
			if cost, _ := products.Cost(n.State().GPUs[a.GPUs[0]].Product); cost > lo*(1+1e-9) {
				res.PremiumPods++
				res.PremiumGPUs += demandOn(n, r, a)
			}
		}
		res.AllocatedGPUs += demandOn(n, r, a)
		if err := n.Assume(r, a); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Name(), err)
		}
		if obs != nil {
			obs.Committed(pod, cands[ci].Node, a.GPUs)
		}
		res.Placed++
	}
	var failedReqs []*scoring.Request
	for k, f := range failed {
		if f {
			failedReqs = append(failedReqs, reqs[k])
		}
	}
	res.FreeGPUs, res.Stranded = stranded(c.nodes, failedReqs)
	return res, nil
}

func setQuality(n *scoring.NodeCache, a scoring.Assignment) topology.Quality {
	q, _ := n.Allocator().Quality(a.GPUs)
	return q
}

// stranded classifies the scenarioCluster's free capacity against the kinds that
// failed (see Stranded).
func stranded(nodes []*scoring.NodeCache, failed []*scoring.Request) (float64, Stranded) {
	var free float64
	var out Stranded
	for _, n := range nodes {
		st := n.State()
		for i := range st.GPUs {
			c := n.GPUFree(i)
			if c <= 0 {
				continue
			}
			free += c
			g := &st.GPUs[i]
			var wanted []*scoring.Request
			for _, r := range failed {
				if modeOf(r) == g.Mode {
					wanted = append(wanted, r)
				}
			}
			usable := func(ignoreCPU, ignoreProduct bool) bool {
				return slices.ContainsFunc(wanted, func(r *scoring.Request) bool { return canUse(st, i, r, ignoreCPU, ignoreProduct) })
			}
			switch {
			case len(wanted) == 0 || usable(false, false):
				// Not wanted by a failed kind (or, which cannot happen
				// without departures, usable by one).
			case usable(true, false):
				out.CPU += c
			case usable(false, true):
				out.Product += c
			case g.Mode == scoring.ModeMIG:
				out.MIGGeometry += c
			case g.Mode == scoring.ModeShared:
				out.ShareSliver += c
			default:
				out.SetSize += c
			}
		}
	}
	return free, out
}

func modeOf(r *scoring.Request) scoring.GPUMode {
	switch r.Kind() {
	case scoring.KindMIG:
		return scoring.ModeMIG
	case scoring.KindShare:
		return scoring.ModeShared
	case scoring.KindWhole:
		return scoring.ModeWhole
	}
	return -1
}

// canUse reports whether a pod of r could use GPU i of st now.
func canUse(st *scoring.NodeState, i int, r *scoring.Request, ignoreCPU, ignoreProduct bool) bool {
	d := &r.Demand
	if !ignoreCPU && (st.CPUFree < d.CPU || st.MemFree < d.Memory) {
		return false
	}
	ok := func(g *scoring.GPU) bool { return g.Healthy && (ignoreProduct || allows(r, g.Product)) }
	g := &st.GPUs[i]
	if !ok(g) {
		return false
	}
	switch r.Kind() {
	case scoring.KindWhole:
		if g.Mode != scoring.ModeWhole || g.Used {
			return false
		}
		count := 0
		for j := range st.GPUs {
			if o := &st.GPUs[j]; o.Mode == scoring.ModeWhole && !o.Used && ok(o) {
				count++
			}
		}
		return count >= d.GPUs
	case scoring.KindMIG:
		return g.Mode == scoring.ModeMIG && slices.ContainsFunc(g.MIGSlices, func(s scoring.MIGSlice) bool { return !s.Used && s.Profile == d.MIGProfile })
	case scoring.KindShare:
		return g.Mode == scoring.ModeShared && g.ShareFree >= d.ShareUnits
	}
	return false
}
