// Package scoring owns Tessera's placement math: the fragmentation of a
// node's free GPU capacity against a target workload learned online from
// recent pods, and the score of putting a pod on a node. It is pure: it
// imports no Kubernetes framework code and keeps no clocks, flags or I/O.
package scoring

import (
	"math"
	"sort"
)

// MilliPerGPU is the capacity of one GPU in share units.
const MilliPerGPU = 1000

// Shape is one pod shape of the target workload.
type Shape struct {
	CPU int64 // milli-CPU
	K   int   // GPUs (1 for a shared pod)
	G   int64 // milli-GPU on each of the K GPUs; 0 for a CPU-only pod
	// Allowed is nil when any GPU model will do, else indexed by model ID.
	Allowed []bool
	// P is the shape's probability in the target workload.
	P float64
}

// AllowsModel reports whether the shape may use a GPU of model modelID.
func (s *Shape) AllowsModel(modelID int) bool {
	return s.Allowed == nil || (modelID >= 0 && modelID < len(s.Allowed) && s.Allowed[modelID])
}

// Node is the free capacity of one node as the scoring functions see it.
type Node struct {
	ModelID int
	CPUFree int64
	// GPUFree is the free milli of each GPU, by index.
	GPUFree []int64
}

// Fragmentation returns the expected fragmentation of node n against the
// shapes: for each shape, the free GPU milli that the shape cannot use
// (all of it when the shape does not fit the node, GPU or CPU, or may not
// use its model; only the GPUs with less than G free when it fits), weighted
// by the shape's probability. CPU-only shapes count the node's free GPU
// milli as stranded, as in FGD.
func Fragmentation(n *Node, shapes []Shape) float64 {
	var total int64
	for _, f := range n.GPUFree {
		total += f
	}
	var out float64
	for i := range shapes {
		s := &shapes[i]
		if s.G <= 0 || !s.AllowsModel(n.ModelID) || n.CPUFree < s.CPU {
			out += s.P * float64(total)
			continue
		}
		c, less := 0, int64(0)
		for _, f := range n.GPUFree {
			if f >= s.G {
				c++
			} else {
				less += f
			}
		}
		if c >= max(s.K, 1) {
			out += s.P * float64(less)
		} else {
			out += s.P * float64(total)
		}
	}
	return out
}

// HoleResidue gives, for every free amount h = 0..1000 milli of one GPU,
// the milli expected to stay free on that GPU for good if the pods of the
// target workload keep arriving at random and each one that fits goes
// into it: E(h) = h when no shape fits, else the mean of E(h − G) over the
// shapes with G ≤ h, weighted by their probability. It ranks the holes a
// shared pod can leave by how well the workload's sizes pair up in them
// (350 milli beside a 650-milli pod is filled by a 320-milli pod; 210 beside
// 470 + 320 waits for a rare 160), which FGD's fragmentation does not see
// while some shape still fits. Whole-GPU shapes (any K) use all 1000 milli
// of a GPU; CPU-only shapes are left out. The table is kept per GPU model,
// as gpu_spec limits which shapes may use a model.
type HoleResidue struct {
	e [][MilliPerGPU + 1]float64 // by model ID, then free milli
}

// NewHoleResidue computes the residues against the shapes for the models
// 0..models−1.
func NewHoleResidue(shapes []Shape, models int) *HoleResidue {
	hr := &HoleResidue{e: make([][MilliPerGPU + 1]float64, models)}
	for m := range models {
		e := &hr.e[m]
		for h := range e {
			var sum, w float64
			for i := range shapes {
				s := &shapes[i]
				g := min(s.G, MilliPerGPU)
				if g <= 0 || g > int64(h) || !s.AllowsModel(m) {
					continue
				}
				sum += s.P * e[int64(h)-g]
				w += s.P
			}
			if w == 0 {
				e[h] = float64(h)
			} else {
				e[h] = sum / w
			}
		}
	}
	return hr
}

// At is the expected residue of one GPU of model modelID with free milli
// free; a model outside the table keeps all of it.
func (hr *HoleResidue) At(modelID int, free int64) float64 {
	free = min(max(free, 0), MilliPerGPU)
	if modelID < 0 || modelID >= len(hr.e) {
		return float64(free)
	}
	return hr.e[modelID][free]
}

// Of is the summed expected residue of n's GPUs.
func (hr *HoleResidue) Of(n *Node) float64 {
	var out float64
	for _, f := range n.GPUFree {
		out += hr.At(n.ModelID, f)
	}
	return out
}

// CPUStranded is the free GPU milli of n that CPU will run out before: the
// part of it beyond what the node's free CPU can feed at gpuPerCPU milli-GPU
// per milli-CPU (the target workload's ratio, see GPUPerCPU).
func CPUStranded(n *Node, gpuPerCPU float64) float64 {
	var total int64
	for _, f := range n.GPUFree {
		total += f
	}
	return max(0, float64(total)-float64(n.CPUFree)*gpuPerCPU)
}

// GPUPerCPU is the target workload's expected milli-GPU per milli-CPU.
func GPUPerCPU(shapes []Shape) float64 {
	var g, c float64
	for i := range shapes {
		g += shapes[i].P * float64(shapes[i].K) * float64(shapes[i].G)
		c += shapes[i].P * float64(shapes[i].CPU)
	}
	if c == 0 {
		return 0
	}
	return g / c
}

// Weights tune Score. The zero value scores by fragmentation alone.
type Weights struct {
	// BestFit rewards, per milli-GPU, nodes with less GPU capacity left
	// after the placement (tie-breaking among equal fragmentation).
	BestFit float64
	// WholeGPU rewards, per fully free GPU left on the node, placements
	// that keep whole GPUs free.
	WholeGPU float64
}

// Score is the value of the change from before to after on one node
// (higher is better): the drop in fragmentation, plus the Weights' packing
// terms. freeAfter is the node's total free milli-GPU after the placement
// and wholeAfter its fully free GPUs after it.
func Score(fragBefore, fragAfter float64, freeAfter int64, wholeAfter int, w Weights) float64 {
	return fragBefore - fragAfter - w.BestFit*float64(freeAfter) + w.WholeGPU*float64(wholeAfter)
}

// Quantize turns a float score into an int64 that keeps 1/1000 milli
// resolution, so that scores that differ are not tied.
func Quantize(s float64) int64 { return int64(math.Round(s * 1000)) }

// Workload is an exponentially decayed histogram of recent pod shapes: each
// observed pod adds weight 1, and every older weight is multiplied by Decay
// per observation. Shapes returns the most frequent shapes covering the
// Coverage share of the weight, with probabilities renormalised.
type Workload struct {
	decay    float64
	coverage float64
	scale    float64 // weight of the next observation (grows as 1/decay)
	keys     map[shapeKey]int
	shapes   []Shape
	weight   []float64
	out      []Shape
	idx      []int
}

type shapeKey struct {
	cpu, g int64
	k      int
	spec   string
}

// NewWorkload returns an empty histogram. decay is the per-observation
// factor in (0, 1] (1 keeps every pod forever); coverage in (0, 1] is the
// share of weight the returned shapes cover.
func NewWorkload(decay, coverage float64) *Workload {
	if decay <= 0 || decay > 1 {
		decay = 1
	}
	if coverage <= 0 || coverage > 1 {
		coverage = 1
	}
	return &Workload{decay: decay, coverage: coverage, scale: 1, keys: map[shapeKey]int{}}
}

// Observe adds weight w (in pods) for shape s; spec identifies s.Allowed.
func (wl *Workload) Observe(s Shape, spec string, w float64) {
	k := shapeKey{s.CPU, s.G, s.K, spec}
	i, ok := wl.keys[k]
	if !ok {
		i = len(wl.shapes)
		wl.keys[k] = i
		s.P = 0
		wl.shapes = append(wl.shapes, s)
		wl.weight = append(wl.weight, 0)
	}
	wl.weight[i] += w * wl.scale
	wl.scale /= wl.decay
	if wl.scale > 1e100 {
		for j := range wl.weight {
			wl.weight[j] /= wl.scale
		}
		wl.scale = 1
	}
}

// Shapes returns the current target workload (valid until the next call).
func (wl *Workload) Shapes() []Shape {
	wl.idx = wl.idx[:0]
	var sum float64
	for i, w := range wl.weight {
		if w > 0 {
			wl.idx = append(wl.idx, i)
			sum += w
		}
	}
	sort.SliceStable(wl.idx, func(a, b int) bool { return wl.weight[wl.idx[a]] > wl.weight[wl.idx[b]] })
	wl.out = wl.out[:0]
	var cum float64
	for _, i := range wl.idx {
		if cum >= wl.coverage*sum {
			break
		}
		cum += wl.weight[i]
		s := wl.shapes[i]
		s.P = wl.weight[i]
		wl.out = append(wl.out, s)
	}
	for i := range wl.out {
		wl.out[i].P /= cum
	}
	return wl.out
}
