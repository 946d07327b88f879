package v1alpha1

import (
	"slices"
	"strings"
)

// AnnotationDevices is the pod annotation in which gpu-scheduler records,
// before it binds the pod, the devices it planned for it: GPU UUIDs (whole
// GPUs, or the GPU of a pod's share units) and MIG device UUIDs,
// comma-separated. The gpu-agent's device plugin follows it when the
// kubelet asks for a preferred allocation.
const AnnotationDevices = "gpu.tessera.dev/devices"

// ParseDevices reads an AnnotationDevices value: the device UUIDs, sorted,
// blanks dropped.
func ParseDevices(v string) []string {
	var out []string
	for d := range strings.SplitSeq(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}
