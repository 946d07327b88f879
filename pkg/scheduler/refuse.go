package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// survey is what the cluster offers for one pod's resource: every GPU
// product, MIG profile and the largest GPUs of each kind, on the nodes
// Tessera can judge; blind is true when a node Tessera cannot judge
// advertises the resource (then nothing is refused on capacity: that node
// might host the pod).
type survey struct {
	products        []string
	profiles        []string
	advertised      bool
	blind           bool
	blindProducts   bool // a node that may have the resource has no product label
	wholeMax        best // most healthy whole GPUs of the resource on one node
	shareMax        best // most units on one GPU of the resource
	sharedSomewhere bool
	wholeSomewhere  bool
	// modes are the ways the nodes Tessera can judge advertise the
	// resource (PreFilter compiles the pod's request for each).
	modes []resMode
	// names are the nodes Filter would not refuse as advertising no such
	// resource — those Tessera cannot judge and those whose GPUNode
	// advertises it — when they are at most half of the surveyed nodes;
	// nil otherwise. PreFilter returns them as its PreFilterResult (see
	// preFilterResult), and absent counts the surveyed nodes left out.
	names  sets.Set[string]
	absent int
}

// best is a maximum and where it is.
type best struct {
	n    int
	node string
	gpu  int
}

func (b *best) offer(n int, node string, gpu int) {
	if n > b.n || n == b.n && b.node != "" && node < b.node {
		*b = best{n: n, node: node, gpu: gpu}
	}
}

// cachedSurvey is a survey of one resource and what it was computed from.
type cachedSurvey struct {
	s     survey
	gen   uint64 // the cluster's GPUNode generation
	nodes int    // the number of nodes surveyed
	// until is when the first surveyed GPUNode turns stale.
	until time.Time
}

// survey looks at every node for the pod's resource. Call with the lock held.
//
// A survey depends on the GPUNodes' capacity (not on what is free), on
// which nodes are fresh and on the nodes Tessera cannot judge; it is kept
// per resource until a GPUNode changes what surveys read (cluster.sameSurvey:
// not a heartbeat, not an allocation), the number of nodes changes or a
// surveyed GPUNode turns stale, so that PreFilter does not walk every node
// for every pod. (A label or allocatable change on a node without a
// GPUNode shows at the next of those.)
func (c *cluster) survey(d *PodDemand, nodes []fwk.NodeInfo, now time.Time) survey {
	if cs, ok := c.surveys[d.Resource]; ok && cs.gen == c.gen && cs.nodes == len(nodes) && now.Before(cs.until) {
		return cs.s
	}
	s, until := c.surveyNodes(d, nodes, now)
	if now.After(c.surveyedAt) {
		c.surveyedAt = now
	}
	if c.surveys == nil {
		c.surveys = map[corev1.ResourceName]cachedSurvey{}
	}
	c.surveys[d.Resource] = cachedSurvey{s: s, gen: c.gen, nodes: len(nodes), until: until}
	return s
}

// surveyNodes computes a survey and when its first fresh node turns stale.
func (c *cluster) surveyNodes(d *PodDemand, nodes []fwk.NodeInfo, now time.Time) (survey, time.Time) {
	var s survey
	until := now.Add(c.staleAfter + time.Nanosecond)
	var names []string
	surveyed := 0
	for _, ni := range nodes {
		node := ni.Node()
		if node == nil {
			continue
		}
		surveyed++
		e, ok := c.fresh(node.Name, now)
		if !ok {
			names = append(names, node.Name)
			q, has := node.Status.Allocatable[d.Resource]
			if has && !q.IsZero() {
				s.blind = true
				if node.Labels[scoring.ProductLabel] == "" {
					s.blindProducts = true
				}
			}
			if p := node.Labels[scoring.ProductLabel]; p != "" && !slices.Contains(s.products, p) {
				s.products = append(s.products, p)
			}
			continue
		}
		m := e.model
		if t := m.heartbeat.Add(c.staleAfter + time.Nanosecond); t.Before(until) {
			until = t
		}
		for _, p := range m.products {
			if !slices.Contains(s.products, p) {
				s.products = append(s.products, p)
			}
		}
		for _, p := range m.profiles {
			if !slices.Contains(s.profiles, p) {
				s.profiles = append(s.profiles, p)
			}
		}
		mode, has := m.resources[d.Resource]
		if !has {
			continue
		}
		names = append(names, node.Name)
		s.advertised = true
		if !slices.Contains(s.modes, mode) {
			s.modes = append(s.modes, mode)
		}
		st := e.cache.State()
		switch mode.kind {
		case scoring.KindWhole:
			s.wholeSomewhere = true
			n := 0
			for _, g := range st.GPUs {
				if (g.Mode == scoring.ModeWhole || g.ShareWhole) && g.Healthy {
					n++
				}
			}
			s.wholeMax.offer(n, node.Name, -1)
		case scoring.KindShare:
			s.sharedSomewhere = true
			for i, g := range st.GPUs {
				if g.Mode == scoring.ModeShared && g.Healthy {
					s.shareMax.offer(g.ShareTotal, node.Name, i)
				}
			}
		}
	}
	slices.Sort(s.products)
	slices.Sort(s.profiles)
	if len(names)*2 <= surveyed {
		s.names, s.absent = sets.New(names...), surveyed-len(names)
	}
	return s, until
}

// preFilterResult names the nodes worth filtering for the pod's resource
// (survey.names), or nil for every node. kube-scheduler filters every node
// for a pod until it has found enough feasible ones; for a resource few
// nodes advertise (MIG slices, time-shared units) that is every node of
// the cluster, nearly all refused by counting. Naming the few that
// advertise it spares the rest: at 5,000 nodes of which 500 offer MIG
// slices, filtering a MIG pod costs a tenth. The nodes left out are those
// Filter would refuse as advertising no such resource; kube-scheduler
// words them "node(s) didn't satisfy plugin(s) [TesseraGPU]" and
// PostFilter says why. Below half of the nodes the set is not worth
// building: walking it costs about what filtering the nodes it spares
// saves. The set is the survey's and is shared by every pod of the
// resource until the survey changes: kube-scheduler clones it (Merge)
// and only reads it.
func (s *survey) preFilterResult() *fwk.PreFilterResult {
	if s.names == nil {
		return nil
	}
	return &fwk.PreFilterResult{NodeNames: s.names}
}

// refusal says why no node can ever host the pod, or "" when some might.
func (s *survey) refusal(d *PodDemand, allowed []string) string {
	if allowed != nil && !s.blindProducts && !slices.ContainsFunc(allowed, func(p string) bool { return slices.Contains(s.products, p) }) {
		have := "none"
		if len(s.products) > 0 {
			have = strings.Join(s.products, ", ")
		}
		return fmt.Sprintf("no node has a GPU of product %s (%s); products in the cluster: %s", strings.Join(allowed, " or "), scoring.ProductLabel, have)
	}
	if s.blind {
		return ""
	}
	if profile, ok := IsMIGResource(d.Resource); ok && !s.advertised {
		have := "none"
		if len(s.profiles) > 0 {
			have = strings.Join(s.profiles, ", ")
		}
		return fmt.Sprintf("no node offers MIG profile %s (%s); MIG profiles offered: %s", profile, d.Resource, have)
	}
	if !s.advertised {
		return fmt.Sprintf("no node advertises %s", d.Resource)
	}
	if s.sharedSomewhere && !s.wholeSomewhere && int(d.Count) > s.shareMax.n {
		return fmt.Sprintf("no GPU has %d units of %s; the largest: %d on node %s, GPU %d", d.Count, d.Resource, s.shareMax.n, s.shareMax.node, s.shareMax.gpu)
	}
	if s.wholeSomewhere && !s.sharedSomewhere && int(d.Count) > s.wholeMax.n {
		return fmt.Sprintf("no node has %d healthy GPUs (%s); the most: %d on node %s", d.Count, d.Resource, s.wholeMax.n, s.wholeMax.node)
	}
	return ""
}

// bestFree finds the most free capacity of the pod's kind on one GPU (shares),
// one node (whole GPUs) or the free slices of the profile, over the nodes
// Tessera can judge, among the allowed products. Call with the lock held.
func (c *cluster) bestFree(cd *cycleData, mode resMode, now time.Time) best {
	var b best
	for name := range c.nodes {
		e, ok := c.fresh(name, now)
		if !ok || e.model.resources[cd.d.Resource] != mode {
			continue
		}
		st := e.cache.State()
		n := 0
		for i, g := range st.GPUs {
			if !g.Healthy || cd.allowed != nil && !slices.Contains(cd.allowed, g.Product) {
				continue
			}
			switch mode.kind {
			case scoring.KindShare:
				if g.Mode == scoring.ModeShared {
					b.offer(g.ShareFree, name, i)
				}
			case scoring.KindMIG:
				for _, sl := range g.MIGSlices {
					if !sl.Used && sl.Profile == mode.profile {
						n++
					}
				}
			default:
				if !g.Used && (g.Mode == scoring.ModeWhole || g.ShareWhole && g.ShareFree == g.ShareTotal) {
					n++
				}
			}
		}
		if mode.kind != scoring.KindShare {
			b.offer(n, name, -1)
		}
	}
	if b.n == 0 {
		return best{}
	}
	return b
}
