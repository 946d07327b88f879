package replay

import "math"

// FGD (fragmentation gradient descent) scores a placement by how much it
// lowers the node's expected GPU fragmentation against the target workload:
// trunc(100·σ((F(node) − F(node′))/1000)). A shared pod goes to the GPU that
// maximises that score.
type FGD struct{}

func (FGD) Name() string { return "FGD" }

func (FGD) NewScorer(run *Run) Scorer {
	if run.State == nil {
		return fgdScenario{run}
	}
	return NewFragmentation(run.State, run.Target)
}

// Fragmentation categories of a (node, shape) pair, in the order the
// protocol sums them. Q3 (the shape fits; only GPUs too small for it are
// fragment) is tracked apart and left out of F.
const (
	fragQ1 = iota // lacks GPU and CPU
	fragQ2        // lacks GPU
	fragQ3        // satisfied
	fragQ4        // lacks CPU
	fragXL        // CPU-only shape, CPU suffices
	fragXR        // CPU-only shape, CPU lacks
	fragNA        // the shape's gpu_spec excludes the node's model
	fragCategories
)

// Fragmentation keeps, for every node, the per-shape quantities F is made of
// (the number of GPUs with at least g_m free and the free milli on the GPUs
// with less than g_m), so that F of the node after a hypothetical placement
// costs O(|M|), whatever the GPU count.
type Fragmentation struct {
	st     *State
	shapes []Shape
	cnt    []int32   // node·|M| + m: GPUs with free >= g_m
	less   []int64   // node·|M| + m: Σ free of GPUs with free < g_m
	access []bool    // node·|M| + m: shape m may use the node's model
	frag   []float64 // F of each node as it is now
	buf    []gpuChange
	gbuf   []int
}

var (
	_ Scorer     = (*Fragmentation)(nil)
	_ Observer   = (*Fragmentation)(nil)
	_ Memoizable = (*Fragmentation)(nil)
)

type gpuChange struct{ from, to int64 }

// NewFragmentation builds the per-node fragmentation state of an empty (or
// current) cluster against the target workload tw.
func NewFragmentation(st *State, tw *TargetWorkload) *Fragmentation {
	m := len(tw.Shapes)
	n := len(st.Nodes)
	f := &Fragmentation{
		st:     st,
		shapes: tw.Shapes,
		cnt:    make([]int32, n*m),
		less:   make([]int64, n*m),
		access: make([]bool, n*m),
		frag:   make([]float64, n),
	}
	for i := range st.Nodes {
		model := st.Cluster.Nodes[i].ModelID
		for j := range f.shapes {
			f.access[i*m+j] = model >= 0 && f.shapes[j].AllowsModel(model)
		}
		f.refresh(i)
	}
	return f
}

// refresh recomputes node n's cached quantities from its state.
func (f *Fragmentation) refresh(n int) {
	m := len(f.shapes)
	ns := &f.st.Nodes[n]
	for j := range f.shapes {
		g := f.shapes[j].G
		var c int32
		var l int64
		for _, free := range ns.GPUFree {
			if free >= g {
				c++
			} else {
				l += free
			}
		}
		f.cnt[n*m+j], f.less[n*m+j] = c, l
	}
	f.frag[n] = f.after(n, ns.CPUFree, ns.GPUFreeTotal, nil)
}

// Node returns F of node n as it is now.
func (f *Fragmentation) Node(n int) float64 { return f.frag[n] }

// after returns F of node n if it had cpuFree milli-CPU, gpuFree milli-GPU in
// total, and the GPU changes ch applied to its current GPUs.
func (f *Fragmentation) after(n int, cpuFree, gpuFree int64, ch []gpuChange) float64 {
	var b [fragCategories]float64
	m := len(f.shapes)
	base := n * m
	all := float64(gpuFree)
	for j := range f.shapes {
		s := &f.shapes[j]
		// Each product is rounded on its own (float64(...)) and added to its
		// category in shape order, as in the protocol, so equal node states
		// give bit-identical F and a zero difference stays exactly zero.
		if s.G == 0 {
			if cpuFree >= s.CPU {
				b[fragXL] += float64(s.P * all)
			} else {
				b[fragXR] += float64(s.P * all)
			}
			continue
		}
		if !f.access[base+j] {
			b[fragNA] += float64(s.P * all)
			continue
		}
		c, l := f.cnt[base+j], f.less[base+j]
		for _, x := range ch {
			if x.from >= s.G {
				c--
			} else {
				l -= x.from
			}
			if x.to >= s.G {
				c++
			} else {
				l += x.to
			}
		}
		fits := c >= int32(max(s.K, 1))
		switch {
		case fits && cpuFree >= s.CPU:
			b[fragQ2] += float64(s.P * float64(l))
		case fits:
			b[fragQ4] += float64(s.P * all)
		case cpuFree >= s.CPU:
			b[fragQ2] += float64(s.P * all)
		default:
			b[fragQ1] += float64(s.P * all)
		}
	}
	var out float64
	for i, v := range b {
		if i != fragQ3 {
			out += v
		}
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func fgdScore(before, after float64) int64 {
	return int64(sigmoid((before-after)/1000) * 100)
}

// Memoizable implements Memoizable: the score depends on the node's state and
// the pod's (CPU, K, G) only.
func (*Fragmentation) Memoizable() bool { return true }

// Score implements Scorer.
func (f *Fragmentation) Score(p *Pod, n int) int64 {
	s, _ := f.best(p, n)
	return s
}

// SharedGPU implements Scorer: the GPU whose use gives the highest score.
func (f *Fragmentation) SharedGPU(p *Pod, n int) int {
	_, gpu := f.best(p, n)
	return gpu
}

// Committed implements Observer.
func (f *Fragmentation) Committed(_ *Pod, n int, _ []int) { f.refresh(n) }

// best returns the FGD score of p on node n and, for a shared pod, the GPU
// that attains it (the lowest index among equals).
func (f *Fragmentation) best(p *Pod, n int) (int64, int) {
	ns := &f.st.Nodes[n]
	before := f.frag[n]
	if p.Shared() {
		score, gpu := int64(0), -1
	gpus:
		for i, free := range ns.GPUFree {
			if free < p.G {
				continue
			}
			// A GPU with the same free milli as an earlier candidate
			// leads to the same node state, hence the same score; the
			// earlier one wins ties.
			for _, prev := range ns.GPUFree[:i] {
				if prev == free {
					continue gpus
				}
			}
			f.buf = append(f.buf[:0], gpuChange{free, free - p.G})
			s := fgdScore(before, f.after(n, ns.CPUFree-p.CPU, ns.GPUFreeTotal-p.G, f.buf))
			if gpu < 0 || s > score {
				score, gpu = s, i
			}
		}
		return score, gpu
	}
	f.buf = f.buf[:0]
	if p.G > 0 {
		f.gbuf = pickGPUs(f.gbuf[:0], ns, p)
		for _, i := range f.gbuf {
			f.buf = append(f.buf, gpuChange{ns.GPUFree[i], ns.GPUFree[i] - p.G})
		}
	}
	return fgdScore(before, f.after(n, ns.CPUFree-p.CPU, ns.GPUFreeTotal-p.Demand(), f.buf)), -1
}

// pickGPUs returns the GPUs a non-shared GPU pod takes on ns: the K
// lowest-index fully free GPUs for whole-GPU pods; for the K > 1, G < 1000
// shape the protocol never produces, the K lowest-index GPUs with G free.
func pickGPUs(dst []int, ns *NodeState, p *Pod) []int {
	if p.G == MilliPerGPU {
		return WholeGPUs(dst, ns, p.K)
	}
	return FirstGPUs(dst, ns, p.K, p.G)
}
