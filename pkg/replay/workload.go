package replay

import (
	"sort"
)

// DefaultPopularity is the share of pods (in percent) that the most frequent
// shapes of the target workload must cover.
const DefaultPopularity = 95

// Shape is one pod shape of the target workload M, with its probability.
type Shape struct {
	CPU  int64
	G    int64
	K    int
	Spec string
	// Allowed is nil when any model will do, else indexed by model ID.
	Allowed []bool
	Count   int
	P       float64
}

// AllowsModel reports whether the shape's gpu_spec admits the model.
func (s *Shape) AllowsModel(modelID int) bool {
	return s.Allowed == nil || (modelID >= 0 && s.Allowed[modelID])
}

// TargetWorkload is the distribution of pod shapes that fragmentation is
// measured against (the FGD paper's M).
type TargetWorkload struct {
	Shapes []Shape
	// Covered is the number of pods of the source list whose shape is in
	// Shapes; Total is the size of that list.
	Covered, Total int
}

// NewTargetWorkload builds M from a pod list as the protocol does: one count
// per pod for each (cpu, g, k, gpu_spec) shape, CPU-only pods included; shapes
// sorted by count (ties: larger cpu, then g, then k, then spec string); the
// shortest prefix covering popularity% of the pods kept, with probabilities
// renormalised over that prefix.
func NewTargetWorkload(pods []Pod, popularity int) *TargetWorkload {
	type key struct {
		cpu, g int64
		k      int
		spec   string
	}
	idx := map[key]int{}
	var shapes []Shape
	for i := range pods {
		p := &pods[i]
		k := key{p.CPU, p.G, p.K, p.Spec}
		j, ok := idx[k]
		if !ok {
			j = len(shapes)
			idx[k] = j
			shapes = append(shapes, Shape{CPU: p.CPU, G: p.G, K: p.K, Spec: p.Spec, Allowed: p.Allowed})
		}
		shapes[j].Count++
	}
	sort.Slice(shapes, func(a, b int) bool {
		x, y := &shapes[a], &shapes[b]
		switch {
		case x.Count != y.Count:
			return x.Count > y.Count
		case x.CPU != y.CPU:
			return x.CPU > y.CPU
		case x.G != y.G:
			return x.G > y.G
		case x.K != y.K:
			return x.K > y.K
		default:
			return x.Spec > y.Spec
		}
	})
	total := float64(len(pods))
	expected := float64(popularity) * total / 100.0
	var cum float64
	n := 0
	for n < len(shapes) && cum < expected {
		cum += float64(shapes[n].Count)
		shapes[n].P = float64(shapes[n].Count) / total
		n++
	}
	tw := &TargetWorkload{Total: len(pods)}
	if n < len(shapes) {
		shapes = shapes[:n]
		for i := range shapes {
			shapes[i].P /= cum / total
		}
	}
	tw.Shapes = shapes
	for _, s := range shapes {
		tw.Covered += s.Count
	}
	return tw
}
