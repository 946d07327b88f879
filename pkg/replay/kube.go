package replay

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// The trace as Kubernetes objects: the Node, the GPUNode its gpu-agent
// would publish and the Pod of each trace row, for replaying a trace
// through the real kube-scheduler (test/replaysched). They are the
// counterparts of TraceNodeSpec and PodDemand: the scheduler plugin reads
// TraceGPUNode as TraceNodeSpec describes the node, and TracePod as
// PodDemand describes the pod (pkg/scheduler's TestTraceObjectsModelAsTheReplay).

// Resources the trace objects use: whole GPUs under NVIDIA's name, and
// every GPU also time-shared into MilliPerGPU units under ShareResource (a
// pod of part of a GPU asks for its milli as units).
const (
	WholeResource corev1.ResourceName = "nvidia.com/gpu"
	ShareResource corev1.ResourceName = "nvidia.com/gpu.shared"
)

// TraceNode is node n of c as a Node named name: allocatable CPU, memory,
// pods (the node's PodLimit), its GPUs whole and in units, the GPU model as
// the nvidia.com/gpu.product label, and Ready (the apiserver keeps a
// Node's status on create).
func TraceNode(c *Cluster, n int, name string) *corev1.Node {
	nd := &c.Nodes[n]
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(nd.CPU, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(nd.Memory<<20, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(int64(nd.PodLimit), resource.DecimalSI),
	}
	labels := map[string]string{corev1.LabelHostname: name}
	if nd.GPUs > 0 {
		alloc[WholeResource] = *resource.NewQuantity(int64(nd.GPUs), resource.DecimalSI)
		alloc[ShareResource] = *resource.NewQuantity(int64(nd.GPUs)*MilliPerGPU, resource.DecimalSI)
		labels[scoring.ProductLabel] = nd.Model
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity: alloc, Allocatable: alloc,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "TraceNode"}},
		},
	}
}

// TraceGPUNode is the GPUNode of node n of c, named name, with heartbeat
// hb: each GPU of the row's model time-shared into MilliPerGPU units of
// ShareResource and also advertised whole as WholeResource
// (Sharing.WholeResource), healthy, with no link information (every pair
// UNKNOWN) and nothing allocated.
func TraceGPUNode(c *Cluster, n int, name string, hb time.Time) *v1alpha1.GPUNode {
	nd := &c.Nodes[n]
	gn := &v1alpha1.GPUNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
	st := &gn.Status
	st.Backend, st.HeartbeatTime = "trace", metav1.NewTime(hb)
	for i := range nd.GPUs {
		st.GPUs = append(st.GPUs, v1alpha1.GPU{
			Index: int32(i), UUID: fmt.Sprintf("GPU-%s-%d", name, i), Product: nd.Model, Health: v1alpha1.Healthy,
			Sharing: &v1alpha1.Sharing{Resource: string(ShareResource), Replicas: MilliPerGPU, WholeResource: string(WholeResource)},
		})
		row := make([]string, nd.GPUs)
		for j := range row {
			row[j] = "UNKNOWN"
		}
		row[i] = v1alpha1.SelfCell
		st.Links = append(st.Links, strings.Join(row, " "))
	}
	st.Summary = v1alpha1.Summary{GPUs: int32(nd.GPUs), Product: nd.Model, Devices: int32(nd.GPUs), Allocation: fmt.Sprintf("0/%d", nd.GPUs)}
	return gn
}

// TracePod is pod p of a trace on c as a Pod named name: CPU and memory
// requests, K whole GPUs (WholeResource) or G units of ShareResource, and,
// for a GPU pod with a gpu_spec, a required node affinity on the product
// to the models it names. It fails for the K > 1, G < 1000 shape
// (PodDemand), which no device plugin offers.
func TracePod(c *Cluster, p *Pod, name string) (*corev1.Pod, error) {
	req := corev1.ResourceList{}
	if p.CPU > 0 {
		req[corev1.ResourceCPU] = *resource.NewMilliQuantity(p.CPU, resource.DecimalSI)
	}
	if p.Memory > 0 {
		req[corev1.ResourceMemory] = *resource.NewQuantity(p.Memory<<20, resource.BinarySI)
	}
	lim := corev1.ResourceList{}
	switch {
	case p.G <= 0:
	case p.G == MilliPerGPU:
		lim[WholeResource] = *resource.NewQuantity(int64(p.K), resource.DecimalSI)
	case p.K == 1:
		lim[ShareResource] = *resource.NewQuantity(p.G, resource.DecimalSI)
	default:
		return nil, fmt.Errorf("pod %s asks for %d milli of each of %d gpus: no device plugin hands out part of several gpus", p.Name, p.G, p.K)
	}
	for r, q := range lim {
		req[r] = q // extended resources: requests equal limits
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"trace.tessera.dev/pod": p.Name}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", Image: "registry.example/trace:1", Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}},
		},
	}
	if p.G > 0 && p.Allowed != nil {
		var models []string
		for m, ok := range p.Allowed {
			if ok {
				models = append(models, c.Models[m])
			}
		}
		if len(models) == 0 { // only models no node has: it fits nowhere
			models = strings.Split(strings.Trim(p.Spec, "|"), "|")
		}
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: scoring.ProductLabel, Operator: corev1.NodeSelectorOpIn, Values: models}},
			}}},
		}}
	}
	return pod, nil
}
