package replay

// NodeState is the free capacity of one node during a replay.
type NodeState struct {
	CPUFree int64 // milli-CPU
	MemFree int64 // MiB
	Pods    int
	// GPUFree is the free milli-GPU of each GPU, by index.
	GPUFree []int64
	// GPUFreeTotal is Σ GPUFree (the protocol's L); FullFree counts the
	// GPUs with all 1000 milli free.
	GPUFreeTotal int64
	FullFree     int
	// Version changes whenever the node's state does; caches keyed by it stay
	// valid while it is unchanged.
	Version uint32
}

// State is the cluster during a replay: one NodeState per Cluster.Nodes entry.
type State struct {
	Cluster *Cluster
	Nodes   []NodeState
	// UsedMilli is the allocated GPU capacity of the whole cluster.
	UsedMilli int64
}

// NewState returns an empty cluster: every node fully free.
func NewState(c *Cluster) *State {
	s := &State{Cluster: c, Nodes: make([]NodeState, len(c.Nodes))}
	total := 0
	for i := range c.Nodes {
		total += c.Nodes[i].GPUs
	}
	free := make([]int64, total)
	for i := range free {
		free[i] = MilliPerGPU
	}
	for i := range c.Nodes {
		nd := &c.Nodes[i]
		s.Nodes[i] = NodeState{
			CPUFree:      nd.CPU,
			MemFree:      nd.Memory,
			GPUFree:      free[:nd.GPUs:nd.GPUs],
			GPUFreeTotal: int64(nd.GPUs) * MilliPerGPU,
			FullFree:     nd.GPUs,
			Version:      1,
		}
		free = free[nd.GPUs:]
	}
	return s
}

// Fits reports whether pod p can go to node n now: CPU, memory and the pod
// count fit, and for a GPU pod the model is allowed and K GPUs each have at
// least G milli free.
func (s *State) Fits(p *Pod, n int) bool {
	nd := &s.Cluster.Nodes[n]
	ns := &s.Nodes[n]
	if ns.CPUFree < p.CPU || ns.MemFree < p.Memory || ns.Pods+1 > nd.PodLimit {
		return false
	}
	if p.G <= 0 {
		return true
	}
	if nd.ModelID < 0 || !p.AllowsModel(nd.ModelID) {
		return false
	}
	if p.G == MilliPerGPU {
		return ns.FullFree >= p.K
	}
	c := 0
	for _, f := range ns.GPUFree {
		if f >= p.G {
			c++
		}
	}
	return c >= p.K
}

// Commit places p on node n, taking G milli from each GPU in gpus.
func (s *State) Commit(p *Pod, n int, gpus []int) {
	ns := &s.Nodes[n]
	ns.CPUFree -= p.CPU
	ns.MemFree -= p.Memory
	ns.Pods++
	for _, i := range gpus {
		if ns.GPUFree[i] == MilliPerGPU {
			ns.FullFree--
		}
		ns.GPUFree[i] -= p.G
		ns.GPUFreeTotal -= p.G
		s.UsedMilli += p.G
	}
	ns.Version++
}

// WholeGPUs returns the k lowest-index GPUs of ns that are fully free,
// appended to dst (whole-GPU placement under every policy).
func WholeGPUs(dst []int, ns *NodeState, k int) []int {
	for i, f := range ns.GPUFree {
		if len(dst) >= k {
			break
		}
		if f == MilliPerGPU {
			dst = append(dst, i)
		}
	}
	return dst
}

// FirstGPUs returns the k lowest-index GPUs with at least g milli free.
func FirstGPUs(dst []int, ns *NodeState, k int, g int64) []int {
	for i, f := range ns.GPUFree {
		if len(dst) >= k {
			break
		}
		if f >= g {
			dst = append(dst, i)
		}
	}
	return dst
}

// BestShareGPU returns the GPU with the least free milli that still has g
// free (lowest index on ties; fully free GPUs are candidates), or -1.
func BestShareGPU(ns *NodeState, g int64) int {
	best := -1
	for i, f := range ns.GPUFree {
		if f >= g && (best < 0 || f < ns.GPUFree[best]) {
			best = i
		}
	}
	return best
}
