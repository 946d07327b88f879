package scoring

// ProductStranded returns the free capacity of node n, in GPUs, that the
// target workload cannot use because of its product: each free GPU's
// capacity weighted by the probability that a target shape's allowed
// products exclude the GPU's product (a pod pinned to H100s meets a free
// L40S). It is 0 before any pod is observed and for a workload without
// product constraints.
func (s *Scorer) ProductStranded(n *NodeCache) float64 {
	var out float64
	for i := range n.st.GPUs {
		free := n.gpuCapacity(i, true)
		if free == 0 {
			continue
		}
		var p float64
		for _, sh := range s.shapes {
			if sh.r.kind != KindNone && !sh.r.allows(n.prod[i]) {
				p += sh.p
			}
		}
		out += free * p
	}
	return out
}
