package schedperf

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
)

// ShapeLabel says which machine a benchmark node is (templates/gpu-node.yaml).
const ShapeLabel = "perf.tessera.dev/shape"

// gpuNodeFor is the GPUNode the gpu-agent publishes for a benchmark node of
// the given shape: dgx (8 H100 on an NVSwitch, NUMA halves), dgx-mig (the
// same with GPUs 6 and 7 in MIG mode, seven 1g.10gb slices each), shared
// (4 A10 on PCIe, each time-shared as 8 units of nvidia.com/gpu.shared).
func gpuNodeFor(n *corev1.Node, hb time.Time) (*v1alpha1.GPUNode, error) {
	gn := &v1alpha1.GPUNode{}
	gn.Name = n.Name
	gn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
	st := &gn.Status
	st.HeartbeatTime = metav1.NewTime(hb)
	st.Backend = "sim:perf"
	gpus := func(count int, product, res string, replicas int32, mem int32) {
		for i := range count {
			st.GPUs = append(st.GPUs, v1alpha1.GPU{
				Index: int32(i), UUID: fmt.Sprintf("GPU-%s-%d", n.Name, i), Product: product, MemoryMiB: int64(mem),
				ComputeCapability: "9.0", Architecture: "hopper", NUMANode: ptr.To(int32(i * 2 / count)),
				Health: v1alpha1.Healthy, Sharing: &v1alpha1.Sharing{Resource: res, Replicas: replicas},
			})
		}
	}
	links := func(cell func(i, j int) string) {
		for i := range st.GPUs {
			row := make([]string, len(st.GPUs))
			for j := range st.GPUs {
				row[j] = "X"
				if i != j {
					row[j] = cell(i, j)
				}
			}
			st.Links = append(st.Links, strings.Join(row, " "))
		}
	}
	nvswitch := func(i, j int) string {
		if i/4 == j/4 {
			return "NVS18:NODE"
		}
		return "NVS18:SYS"
	}
	switch shape := n.Labels[ShapeLabel]; shape {
	case "dgx":
		gpus(8, "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu", 1, 81559)
		links(nvswitch)
	case "dgx-mig":
		gpus(8, "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu", 1, 81559)
		links(nvswitch)
		st.MIGStrategy = "mixed"
		for _, i := range []int{6, 7} {
			g := &st.GPUs[i]
			g.MIGCapable, g.MIGEnabled, g.Sharing = true, true, nil
			for j := range 7 {
				g.MIGSlices = append(g.MIGSlices, v1alpha1.MIGSlice{
					UUID: fmt.Sprintf("MIG-%s-%d-%d", n.Name, i, j), Profile: "1g.10gb", GPUInstanceID: int32(j + 1),
					Placement: v1alpha1.Placement{Start: int32(j), Size: 1}, MemoryMiB: 9856, Health: v1alpha1.Healthy,
					Sharing: &v1alpha1.Sharing{Resource: "nvidia.com/mig-1g.10gb", Replicas: 1},
				})
			}
		}
	case "shared":
		gpus(4, "NVIDIA-A10", "nvidia.com/gpu.shared", 8, 23028)
		links(func(i, j int) string {
			if i/2 == j/2 {
				return "PHB"
			}
			return "SYS"
		})
	default:
		return nil, fmt.Errorf("node %s: label %s=%q, want dgx, dgx-mig or shared", n.Name, ShapeLabel, shape)
	}
	return gn, nil
}
