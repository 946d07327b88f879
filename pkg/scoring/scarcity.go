package scoring

// ModelPressure returns, for each of models GPU models (by model ID), the
// GPUs per arriving pod that the target's model-constrained shapes ask of
// it: each shape with an Allowed list adds P·K·G/1000, split evenly over the
// models it allows. Shapes that may use any model add nothing: they can go
// elsewhere.
func ModelPressure(shapes []Shape, models int) []float64 {
	out := make([]float64, models)
	for i := range shapes {
		s := &shapes[i]
		if s.G <= 0 || s.Allowed == nil {
			continue
		}
		allowed := 0
		for m, ok := range s.Allowed {
			if ok && m < models {
				allowed++
			}
		}
		if allowed == 0 {
			continue
		}
		share := s.P * float64(s.K) * float64(s.G) / MilliPerGPU / float64(allowed)
		for m, ok := range s.Allowed {
			if ok && m < models {
				out[m] += share
			}
		}
	}
	return out
}

// Scarcity is the cost, per milli-GPU taken, of placing a pod on a GPU of a
// model under pressure (ModelPressure) that holds modelFree of the
// cluster's clusterFree free milli-GPU: pressure divided by the model's
// share of the free capacity. It grows as the model's GPUs run out while
// pods that can only use them keep arriving, so pods that may go anywhere
// leave them to those pods. A model with no free capacity costs nothing
// (nothing can be placed on it).
func Scarcity(pressure, modelFree, clusterFree float64) float64 {
	if pressure <= 0 || modelFree <= 0 || clusterFree <= 0 {
		return 0
	}
	return pressure * clusterFree / modelFree
}
