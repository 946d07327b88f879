package replay

import (
	"fmt"
	"strconv"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Tessera is Tessera's placement policy: pkg/scoring's Scorer, the code the
// scheduler plugin runs, on the trace's nodes described as the plugin sees
// nodes (TraceNodeSpec: every GPU time-shared into 1000 units that may also
// go whole) and the trace's pods as the plugin sees pods (PodDemand). This
// adapter keeps the scorer's nodes in step with the replay's state and
// turns results into the replay's integer scores; it holds no scoring logic
// of its own.
type Tessera struct {
	// Config is the scorer's configuration; nil uses scoring.DefaultConfig.
	Config *scoring.Config
	// Prior is what the target workload starts from (PriorTrace when "").
	Prior Prior
}

// Prior is where Tessera's target workload starts before it learns from
// the pods that arrive.
type Prior string

// Priors.
const (
	// PriorTrace seeds it with the replayed trace's shape distribution (the
	// FGD protocol's target workload, the one FGD gets), at PriorWeight pods.
	PriorTrace Prior = "trace"
	// PriorNone starts from nothing: the target is learned only from the
	// pods that arrive, as the scheduler does on an empty cluster (it warms
	// up from the pods already running when it starts).
	PriorNone Prior = "none"
	// PriorOther seeds it with another trace's distribution (Run.Other): a
	// target learned on a different workload.
	PriorOther Prior = "other"
)

// PriorWeight is the weight, in pods, of a trace's distribution as a prior.
const PriorWeight = 1000

// Name is "Tessera", with the prior when it is not the trace's.
func (t Tessera) Name() string {
	switch t.Prior {
	case PriorNone:
		return "Tessera-online"
	case PriorOther:
		return "Tessera-cross"
	}
	return "Tessera"
}

// TraceNodeSpec describes node n of c with its free capacity ns as the
// scheduler plugin would see it in a GPUNode: each GPU of the node's model
// time-shared into 1000 units (a shared pod asks for its milli as units)
// that may also go whole (a pod of K GPUs takes K GPUs with every unit
// free), no link matrix, and what is in use as one allocation.
func TraceNodeSpec(c *Cluster, n int, ns *NodeState) scoring.NodeSpec {
	nd := &c.Nodes[n]
	spec := scoring.NodeSpec{Name: nd.Name, CPU: nd.CPU, Memory: nd.Memory}
	used := scoring.Allocation{CPU: nd.CPU - ns.CPUFree, Memory: nd.Memory - ns.MemFree}
	for i := range nd.GPUs {
		spec.GPUs = append(spec.GPUs, scoring.GPUSpec{Product: nd.Model, NUMANode: -1, Healthy: true, ShareUnits: MilliPerGPU, ShareWhole: true})
		if u := MilliPerGPU - ns.GPUFree[i]; u > 0 {
			used.Shares = append(used.Shares, scoring.ShareAllocation{GPU: i, Units: int(u)})
		}
	}
	spec.Allocations = []scoring.Allocation{used}
	return spec
}

// PodDemand is pod p as the scheduler plugin would see it: K whole GPUs
// (G = 1000), or G share units of one GPU of 1000 units, the models its
// gpu_spec allows as products, its CPU and memory. ok is false for the K >
// 1, G < 1000 shape the protocol allows but no device plugin offers (part
// of several GPUs; absent from the traces).
func PodDemand(p *Pod, models []string) (d scoring.Demand, ok bool) {
	d = scoring.Demand{CPU: p.CPU, Memory: p.Memory}
	switch {
	case p.G <= 0:
	case p.G == MilliPerGPU:
		d.GPUs = p.K
	case p.K == 1:
		d.ShareUnits, d.UnitsPerGPU = int(p.G), MilliPerGPU
	default:
		return d, false
	}
	if p.G > 0 && p.Allowed != nil {
		d.Allowed = []string{}
		for m, ok := range p.Allowed {
			if ok {
				d.Allowed = append(d.Allowed, models[m])
			}
		}
	}
	return d, true
}

func (t Tessera) NewScorer(run *Run) Scorer {
	if run.State == nil {
		return tesseraScenario{run}
	}
	cfg := scoring.DefaultConfig()
	if t.Config != nil {
		cfg = *t.Config
	}
	s := &tesseraScorer{run: run, reqs: map[podKey]*scoring.Request{}}
	sc, err := scoring.NewScorer(cfg)
	if err != nil {
		s.err = err
		return s
	}
	s.sc = sc
	c := run.State.Cluster
	for n := range c.Nodes {
		st, err := scoring.NewNodeState(TraceNodeSpec(c, n, &run.State.Nodes[n]))
		if err == nil {
			var nc *scoring.NodeCache
			if nc, err = sc.NewNode(st); err == nil {
				s.nodes = append(s.nodes, nc)
				continue
			}
		}
		s.err = fmt.Errorf("tessera: node %s: %w", c.Nodes[n].Name, err)
		return s
	}
	var prior *TargetWorkload
	switch t.Prior {
	case PriorTrace, "":
		prior = run.Target
	case PriorOther:
		if run.Other != nil {
			prior = run.Other.Target
		}
	}
	if prior != nil {
		var reqs []*scoring.Request
		var weights []float64
		for _, sh := range prior.Shapes {
			// A shape of another trace names its models in that trace's
			// cluster, which is this one (one node list per experiment).
			d, ok := PodDemand(&Pod{CPU: sh.CPU, K: sh.K, G: sh.G, Allowed: sh.Allowed}, c.Models)
			if !ok {
				continue
			}
			r, err := sc.Compile(d)
			if err != nil {
				s.err = fmt.Errorf("tessera: prior shape %+v: %w", d, err)
				return s
			}
			reqs = append(reqs, r)
			weights = append(weights, PriorWeight*sh.P)
		}
		if err := sc.SetTarget(reqs, weights); err != nil {
			s.err = fmt.Errorf("tessera: %w", err)
		}
	}
	return s
}

// podKey identifies the pods that compile to the same request.
type podKey struct {
	class  int
	memory int64
	spec   string
}

type tesseraScorer struct {
	run   *Run
	sc    *scoring.Scorer
	nodes []*scoring.NodeCache
	reqs  map[podKey]*scoring.Request
	err   error
	// lastReqPod's request is lastReq (a pod is scored on many nodes in a
	// row).
	lastReqPod *Pod
	lastReq    *scoring.Request
}

var (
	_ Scorer    = (*tesseraScorer)(nil)
	_ PreScorer = (*tesseraScorer)(nil)
	_ Observer  = (*tesseraScorer)(nil)
)

// request returns p's compiled request; nil for a pod the scorer cannot
// express (PodDemand) or after an error.
func (s *tesseraScorer) request(p *Pod) *scoring.Request {
	if s.err != nil {
		return nil
	}
	if p == s.lastReqPod {
		return s.lastReq
	}
	k := podKey{p.Class, p.Memory, p.Spec}
	if r, ok := s.reqs[k]; ok {
		s.lastReqPod, s.lastReq = p, r
		return r
	}
	var r *scoring.Request
	if d, ok := PodDemand(p, s.run.State.Cluster.Models); ok {
		var err error
		if r, err = s.sc.Compile(d); err != nil {
			s.err = fmt.Errorf("tessera: pod %s: %w", p.Name, err)
			return nil
		}
	}
	s.reqs[k] = r
	s.lastReqPod, s.lastReq = p, r
	return r
}

// observe adds the arriving pod p to the learned target at the points the
// scheduler plugin does (PreScore, then Reserve; scoring.ObserveArrival
// keeps it to once per arrival): the target learns from the pods that get
// placed, before they are scored.
func (s *tesseraScorer) observe(p *Pod) {
	if r := s.request(p); r != nil {
		s.sc.ObserveArrival(strconv.Itoa(s.run.Step), r)
	}
}

func (s *tesseraScorer) PreScore(p *Pod, _ []int) { s.observe(p) }

// Score is the scorer's Key; a pod the scorer cannot express scores 0 on
// every node, and a node the scorer finds infeasible (which the replay's
// feasibility rules out) -1, counted as an error.
func (s *tesseraScorer) Score(p *Pod, n int) int64 {
	r := s.request(p)
	if r == nil {
		return 0
	}
	k, err := s.sc.Rank(s.nodes[n], r)
	if err != nil {
		if s.err == nil {
			s.err = fmt.Errorf("tessera: pod %s fits node %s under the protocol, not under the scorer: %w", p.Name, s.run.State.Cluster.Nodes[n].Name, err)
		}
		return -1
	}
	return k
}

func (s *tesseraScorer) SharedGPU(p *Pod, n int) int {
	if r := s.request(p); r != nil {
		if res := s.sc.Score(s.nodes[n], r); res.Err == nil {
			return res.Assignment.GPUs[0]
		}
	}
	return BestShareGPU(&s.run.State.Nodes[n], p.G)
}

func (s *tesseraScorer) Committed(p *Pod, n int, gpus []int) {
	s.observe(p)
	r := s.request(p)
	if r == nil {
		if s.err == nil && p.G > 0 {
			// The scorer's node no longer matches the replay's.
			s.err = fmt.Errorf("tessera: pod %s asks for %d milli of %d gpus, which the scorer cannot follow", p.Name, p.G, p.K)
		}
		return
	}
	if err := s.nodes[n].Assume(r, scoring.Assignment{GPUs: gpus}); err != nil && s.err == nil {
		s.err = fmt.Errorf("tessera: %w", err)
	}
}

// Err reports the first inconsistency between the scorer and the replay.
func (s *tesseraScorer) Err() error { return s.err }
