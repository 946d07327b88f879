package scheduler

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

const (
	h100 = "NVIDIA-H100-80GB-HBM3"
	l40s = "NVIDIA-L40S"
	a10  = "NVIDIA-A10"
)

// gpuNode builds GPUNodes as the gpu-agent publishes them.
type gpuNode struct{ gn v1alpha1.GPUNode }

func newGPUNode(name string, heartbeat time.Time) *gpuNode {
	b := &gpuNode{}
	b.gn.Name = name
	b.gn.Status.HeartbeatTime = metav1.NewTime(heartbeat)
	b.gn.Status.Backend = "sim"
	return b
}

func (b *gpuNode) uuid(i int) string { return fmt.Sprintf("GPU-%s-%d", b.gn.Name, i) }

// gpus adds n GPUs of a product advertised as resource with replicas units,
// on NUMA node numa(i).
func (b *gpuNode) gpus(n int, product, res string, replicas int32, numa func(int) int32) *gpuNode {
	for range n {
		i := len(b.gn.Status.GPUs)
		b.gn.Status.GPUs = append(b.gn.Status.GPUs, v1alpha1.GPU{
			Index: int32(i), UUID: b.uuid(i), Product: product, MemoryMiB: 81559, ComputeCapability: "9.0",
			Architecture: "hopper", NUMANode: ptr.To(numa(i)), Health: v1alpha1.Healthy,
			Sharing: &v1alpha1.Sharing{Resource: res, Replicas: replicas},
		})
	}
	return b
}

// mig turns GPU i into a MIG GPU with slices of the given profiles placed
// from memory slice 0 (sizes from the profile's compute slices: 1g 1, 2g 2,
// 3g 4, 4g 4, 7g 8).
func (b *gpuNode) mig(i int, profiles ...string) *gpuNode {
	g := &b.gn.Status.GPUs[i]
	g.MIGCapable, g.MIGEnabled, g.Sharing = true, true, nil
	start := int32(0)
	for j, p := range profiles {
		size := map[int]int32{1: 1, 2: 2, 3: 4, 4: 4, 7: 8}[computeSlices(p)]
		g.MIGSlices = append(g.MIGSlices, v1alpha1.MIGSlice{
			UUID: fmt.Sprintf("MIG-%s-%d-%d", b.gn.Name, i, j), Profile: p, GPUInstanceID: int32(j + 1),
			Placement: v1alpha1.Placement{Start: start, Size: size}, MemoryMiB: 9856, Health: v1alpha1.Healthy,
			Sharing: &v1alpha1.Sharing{Resource: MIGResourcePrefix + p, Replicas: 1},
		})
		start += size
	}
	return b
}

// links fills the matrix: cell(i, j) for every pair.
func (b *gpuNode) links(cell func(i, j int) string) *gpuNode {
	n := len(b.gn.Status.GPUs)
	b.gn.Status.Links = nil
	for i := range n {
		var row []string
		for j := range n {
			if i == j {
				row = append(row, "X")
			} else {
				row = append(row, cell(i, j))
			}
		}
		b.gn.Status.Links = append(b.gn.Status.Links, strings.Join(row, " "))
	}
	return b
}

func (b *gpuNode) alloc(ns, pod string, devices ...string) *gpuNode {
	b.gn.Status.Allocations = append(b.gn.Status.Allocations, v1alpha1.Allocation{Namespace: ns, Pod: pod, Container: "c", Resource: "nvidia.com/gpu", DeviceIDs: devices})
	return b
}

func (b *gpuNode) unhealthy(i int, reason string) *gpuNode {
	b.gn.Status.GPUs[i].Health, b.gn.Status.GPUs[i].HealthReason = v1alpha1.Unhealthy, reason
	return b
}

func (b *gpuNode) obj() *v1alpha1.GPUNode { return b.gn.DeepCopy() }

func numaHalves(n int) func(int) int32 { return func(i int) int32 { return int32(i * 2 / n) } }

// dgxH100 is a DGX H100: 8 GPUs on an NVSwitch (18 links each), NUMA 0 for
// 0-3 and 1 for 4-7; the GPUs listed in migGPUs carry seven 1g.10gb slices.
func dgxH100(name string, hb time.Time, migGPUs ...int) *gpuNode {
	b := newGPUNode(name, hb).gpus(8, h100, "nvidia.com/gpu", 1, numaHalves(8)).links(func(i, j int) string {
		if i/4 == j/4 {
			return "NVS18:NODE"
		}
		return "NVS18:SYS"
	})
	for _, g := range migGPUs {
		b.mig(g, "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb", "1g.10gb")
	}
	return b
}

// l40sServer is 4 L40S on PCIe, two per NUMA node, no NVLink.
func l40sServer(name string, hb time.Time) *gpuNode {
	return newGPUNode(name, hb).gpus(4, l40s, "nvidia.com/gpu", 1, numaHalves(4)).links(func(i, j int) string {
		if i/2 == j/2 {
			return "PHB"
		}
		return "SYS"
	})
}

// sharedNode is n A10s time-shared as nvidia.com/gpu.shared in units each.
func sharedNode(name string, hb time.Time, n int, units int32) *gpuNode {
	return newGPUNode(name, hb).gpus(n, a10, "nvidia.com/gpu.shared", units, numaHalves(n)).links(func(int, int) string { return "PHB" })
}

// kubeNode is the Node object for a GPUNode: allocatable CPU, memory and
// the device-plugin resources the GPUNode advertises, and the product label.
func kubeNode(gn *v1alpha1.GPUNode, cpu, mem string) *corev1.Node {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		corev1.ResourcePods: resource.MustParse("110"),
	}
	count := map[string]int64{}
	labels := map[string]string{"kubernetes.io/hostname": gn.Name}
	for _, g := range gn.Status.GPUs {
		labels[scoring.ProductLabel] = g.Product
		if g.Sharing != nil {
			count[g.Sharing.Resource] += int64(g.Sharing.Replicas)
		}
		for _, s := range g.MIGSlices {
			if s.Sharing != nil {
				count[s.Sharing.Resource] += int64(s.Sharing.Replicas)
			}
		}
	}
	for r, n := range count {
		alloc[corev1.ResourceName(r)] = *resource.NewQuantity(n, resource.DecimalSI)
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: gn.Name, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity: alloc, Allocatable: alloc,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		},
	}
}

// wholeAndShared is a node of n A10s, each time-shared into units of
// nvidia.com/gpu.shared and advertised whole as nvidia.com/gpu too (the
// openb traces' GPUs), without link information.
func wholeAndShared(name string, hb time.Time, n int, units int32) *gpuNode {
	b := newGPUNode(name, hb).gpus(n, a10, "nvidia.com/gpu.shared", units, func(int) int32 { return 0 })
	for i := range b.gn.Status.GPUs {
		b.gn.Status.GPUs[i].Sharing.WholeResource = "nvidia.com/gpu"
	}
	return b.links(func(i, j int) string { return "UNKNOWN" })
}
