package scoring

import "math/bits"

// The node-shape scarcity cost (Config.ShapeScarcity). The fragmentation
// values a node's ability to host a multi-GPU target shape at the shape's
// share of the pods, whatever the cluster has left: breaking one of the last
// nodes that can host an 8-GPU pod costs no more than breaking one of many.
// The CPU-stranded term, which counts GPUs, can then outweigh it, and the
// large pods fail once their nodes are gone (docs/benchmarks.md, the
// multi-GPU stand-ins). The shape cost charges each placement, per
// multi-GPU shape of the learned workload, the pods of that shape the node
// can no longer host, at the shape's GPUs per arriving pod times how much
// scarcer than free capacity in general the capacity that can still host
// it is (the cluster's free capacity over it, less 1: the fragmentation
// already prices a shape's loss where any free capacity hosts it), as the
// product scarcity cost does for product-constrained pods. It is part of
// Result.ScarcityCost and, like the product's, follows the whole cluster:
// the scorer keeps its nodes' counts of each shape's pods (NewNode,
// RemoveNode, Assume, Forget, SetHealthy) and recounts them all when the
// target is refreshed.

// shapeLoss is how many pods of host shape j a placement leaves the node
// unable to host.
type shapeLoss struct {
	j    int32
	lost int32
}

// minHostGPUs is the smallest whole-GPU shape the shape cost counts: a
// 1-GPU pod fits any free GPU with CPU beside it, which the fragmentation
// and the CPU-stranded term already price.
const minHostGPUs = 2

// hostCount is how many pods of r the node can host, with dl applied when
// not nil: its free whole GPUs of a product r allows, in r's GPUs, and its
// free CPU, in r's CPU. Memory is left out, as the fragmentation leaves it.
func (n *NodeCache) hostCount(r *Request, whole uint64, dl *delta) int {
	if dl != nil && (dl.kind == KindWhole || dl.kind == KindShare) {
		for _, i := range dl.a.GPUs {
			whole &^= 1 << i
		}
	}
	if r.allowed != nil {
		for rest := whole; rest != 0; rest &= rest - 1 {
			if i := bits.TrailingZeros64(rest); !r.allows(n.prod[i]) {
				whole &^= 1 << i
			}
		}
	}
	c := bits.OnesCount64(whole) / r.Demand.GPUs
	if cpu := r.Demand.CPU; cpu > 0 {
		free := n.st.CPUFree
		if dl != nil {
			free -= dl.cpu
		}
		c = min(c, int(max(free, 0)/cpu))
	}
	return c
}

// minHostP is the smallest probability of a host shape: rarer shapes cost
// next to nothing and would only lengthen the loops.
const minHostP = 1e-4

// refreshHostShapes picks the learned workload's multi-GPU shapes and
// counts every node's pods of them afresh (after a refresh of the target).
// Unlike the fragmentation's target it keeps the shapes below
// TargetCoverage: the rare large pods (an 8-GPU pod asking 120 cores,
// 0.3 % of the pods) are the ones whose few hosts get broken.
func (s *Scorer) refreshHostShapes(cum float64) {
	s.hostShapes = s.hostShapes[:0]
	if s.cfg.ShapeScarcity > 0 && cum > 0 {
		w := s.target
		for i, r := range w.reqs {
			if p := w.weight[i] / cum; r.kind == KindWhole && r.Demand.GPUs >= minHostGPUs && p >= minHostP {
				s.hostShapes = append(s.hostShapes, targetShape{r: r, p: p})
			}
		}
	}
	s.hostFree = append(s.hostFree[:0], make([]float64, len(s.hostShapes))...)
	for _, n := range s.nodes {
		n.hosts = n.hosts[:0]
		s.updateHosts(n, 1)
	}
}

// updateHosts recounts n's pods of the host shapes and adds the change to
// the cluster's hosting capacity; sign -1 takes n's count out (RemoveNode).
func (s *Scorer) updateHosts(n *NodeCache, sign int) {
	if len(n.hosts) != len(s.hostShapes) {
		n.hosts = append(n.hosts[:0], make([]int32, len(s.hostShapes))...)
	}
	whole := n.wholeMask()
	for j := range s.hostShapes {
		r := s.hostShapes[j].r
		h := int32(0)
		if sign > 0 {
			h = int32(n.hostCount(r, whole, nil))
		}
		s.hostFree[j] += float64(h-n.hosts[j]) * r.gpus
		n.hosts[j] = h
	}
}

// hostLosses appends to dst the host shapes of which the placement dl
// leaves n able to host fewer pods.
func (s *Scorer) hostLosses(n *NodeCache, dl *delta, dst []shapeLoss) []shapeLoss {
	if len(s.hostShapes) == 0 {
		return dst
	}
	whole := n.wholeMask()
	for j := range s.hostShapes {
		before := n.hosts[j]
		if before == 0 {
			continue
		}
		if after := int32(n.hostCount(s.hostShapes[j].r, whole, dl)); after < before {
			if cap(dst) == 0 {
				// One allocation per memo entry, reused while it lives.
				dst = make([]shapeLoss, 0, len(s.hostShapes))
			}
			dst = append(dst, shapeLoss{j: int32(j), lost: before - after})
		}
	}
	return dst
}

// shapeScarcity is the weighted cost of the host-shape pods a placement
// loses: per shape, the pods lost × the shape's GPUs per arriving pod
// (probability × GPUs) × (the cluster's free capacity over the capacity
// that can host the shape, before the placement, − 1).
func (s *Scorer) shapeScarcity(losses []shapeLoss) float64 {
	if len(losses) == 0 || s.clusterFree <= 0 {
		return 0
	}
	var c float64
	for _, l := range losses {
		c += s.lossCost(int(l.j), int(l.lost))
	}
	return s.cfg.ShapeScarcity * c
}

// lossCost is shapeScarcity's term for lost pods of host shape j,
// unweighted.
func (s *Scorer) lossCost(j, lost int) float64 {
	if free := s.hostFree[j]; free > 0 && s.clusterFree > 0 {
		sh := &s.hostShapes[j]
		return float64(lost) * sh.p * sh.r.gpus * max(0, s.clusterFree/free-1)
	}
	return 0
}
