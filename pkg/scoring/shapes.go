package scoring

import "math/bits"

// The node-shape scarcity cost (Config.ShapeScarcity). The fragmentation
// values a node's ability to host a multi-GPU target shape at the shape's
// share of the pods, whatever the cluster has left: breaking one of the last
// nodes that can host an 8-GPU pod costs no more than breaking one of many.
// The CPU-stranded term, which counts GPUs, can then outweigh it, and the
// large pods fail once their nodes are gone (docs/benchmarks.md, the
// multi-GPU stand-ins). The shape cost charges each placement, per
// multi-GPU target shape, the pods of that shape the node can no longer
// host, at the shape's GPUs per arriving pod times how scarce the capacity
// that can still host it is (the cluster's free capacity over it), as the
// product scarcity cost does for product-constrained pods.

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

// refreshHostShapes picks the target's multi-GPU shapes and counts every
// node's pods of them afresh (after a refresh of the target).
func (s *Scorer) refreshHostShapes() {
	s.hostShapes = s.hostShapes[:0]
	if s.cfg.ShapeScarcity > 0 {
		for i, sh := range s.shapes {
			if sh.r.kind == KindWhole && sh.r.Demand.GPUs >= minHostGPUs {
				s.hostShapes = append(s.hostShapes, int32(i))
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
	for j, si := range s.hostShapes {
		r := s.shapes[si].r
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
	for j, si := range s.hostShapes {
		before := n.hosts[j]
		if before == 0 {
			continue
		}
		if after := int32(n.hostCount(s.shapes[si].r, whole, dl)); after < before {
			dst = append(dst, shapeLoss{j: int32(j), lost: before - after})
		}
	}
	return dst
}

// shapeScarcity is the weighted cost of the host-shape pods a placement
// loses: per shape, the pods lost × the shape's GPUs per arriving pod
// (probability × GPUs) × the cluster's free capacity over the free
// capacity that can host the shape (before the placement).
func (s *Scorer) shapeScarcity(losses []shapeLoss) float64 {
	if len(losses) == 0 || s.clusterFree <= 0 {
		return 0
	}
	var c float64
	for _, l := range losses {
		sh := &s.shapes[s.hostShapes[l.j]]
		if free := s.hostFree[l.j]; free > 0 {
			c += float64(l.lost) * sh.p * sh.r.gpus * s.clusterFree / free
		}
	}
	return s.cfg.ShapeScarcity * c
}
