package cluster

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload is one pod an MLOps stack creates, as the scenario submits it.
type Workload struct {
	Namespace, Name string
	// App is what created the pod, for people: "PyTorchJob llm-finetune (master)".
	App string
	// Resource and Count are the GPU request of the pod's one container.
	Resource string
	Count    int64
	// Products, when set, is required node affinity on nvidia.com/gpu.product.
	Products []string
	// NVLink asks for NVLink-connected GPUs (gpu.tessera.dev/interconnect).
	NVLink bool
	// Labels are the pod's labels (the operator's, e.g. KServe's).
	Labels map[string]string
	// AfterRelabel marks pods that need the MIG layout the scenario switches
	// to: submitted with the others, they wait for the switch.
	AfterRelabel bool
	// Impossible marks a pod that no node of the fleet can ever host.
	Impossible bool
}

// Key is namespace/name.
func (w Workload) Key() string { return w.Namespace + "/" + w.Name }

// Workloads are the scenario's pods.
func Workloads() []Workload {
	job := func(role string) map[string]string {
		return map[string]string{"training.kubeflow.org/job-name": "llm-finetune", "training.kubeflow.org/replica-type": role}
	}
	isvc := func(name string) map[string]string {
		return map[string]string{"serving.kserve.io/inferenceservice": name, "component": "predictor"}
	}
	nb := map[string]string{"app": "jupyter-notebook"}
	return []Workload{
		{Namespace: "training", Name: "llm-finetune-master-0", App: "PyTorchJob llm-finetune (master)", Resource: "nvidia.com/gpu", Count: 4, NVLink: true, Labels: job("master")},
		{Namespace: "training", Name: "llm-finetune-worker-0", App: "PyTorchJob llm-finetune (worker)", Resource: "nvidia.com/gpu", Count: 4, NVLink: true, Labels: job("worker")},
		{Namespace: "training", Name: "vision-pretrain-0", App: "4-GPU job that needs NVLink", Resource: "nvidia.com/gpu", Count: 4, NVLink: true},
		{Namespace: "serving", Name: "fraud-predictor-0", App: "KServe fraud (predictor)", Resource: "nvidia.com/mig-1g.10gb", Count: 1, Labels: isvc("fraud")},
		{Namespace: "serving", Name: "fraud-predictor-1", App: "KServe fraud (predictor)", Resource: "nvidia.com/mig-1g.10gb", Count: 1, Labels: isvc("fraud")},
		{Namespace: "serving", Name: "ranker-predictor-0", App: "KServe ranker (predictor)", Resource: "nvidia.com/mig-1g.10gb", Count: 1, Labels: isvc("ranker")},
		{Namespace: "notebooks", Name: "alice-0", App: "notebook", Resource: "nvidia.com/gpu.shared", Count: 1, Labels: nb},
		{Namespace: "notebooks", Name: "bob-0", App: "notebook", Resource: "nvidia.com/gpu.shared", Count: 1, Labels: nb},
		{Namespace: "notebooks", Name: "carol-0", App: "notebook (2 shares)", Resource: "nvidia.com/gpu.shared", Count: 2, Labels: nb},
		{Namespace: "serving", Name: "embeddings-0", App: "Deployment pinned to L40S", Resource: "nvidia.com/gpu", Count: 2, Products: []string{"NVIDIA-L40S"}},
		{Namespace: "training", Name: "batch-eval-0", App: "Job pinned to L40S", Resource: "nvidia.com/gpu", Count: 1, Products: []string{"NVIDIA-L40S"}},
		{Namespace: "training", Name: "dev-box-0", App: "pod pinned to RTX 4090", Resource: "nvidia.com/gpu", Count: 1, Products: []string{"NVIDIA-GeForce-RTX-4090"}},
		{Namespace: "training", Name: "train-b200-0", App: "job pinned to B200 (impossible here)", Resource: "nvidia.com/gpu", Count: 8, Products: []string{"NVIDIA-B200"}, Impossible: true},
		{Namespace: "serving", Name: "llm-predictor-0", App: "KServe llm (predictor, new 3g.40gb slices)", Resource: "nvidia.com/mig-3g.40gb", Count: 1, Labels: isvc("llm"), AfterRelabel: true},
		{Namespace: "serving", Name: "llm-predictor-1", App: "KServe llm (predictor, new 3g.40gb slices)", Resource: "nvidia.com/mig-3g.40gb", Count: 1, Labels: isvc("llm"), AfterRelabel: true},
	}
}

// Pod is the pod w's controller would create, placed by Tessera.
func (w Workload) Pod() *corev1.Pod {
	q := *resource.NewQuantity(w.Count, resource.DecimalSI)
	res := corev1.ResourceList{corev1.ResourceName(w.Resource): q, corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("4Gi")}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name, Labels: w.Labels, Annotations: map[string]string{}},
		Spec: corev1.PodSpec{
			SchedulerName: SchedulerName,
			Containers: []corev1.Container{{Name: "main", Image: "registry.example/mlops/" + w.Name + ":1",
				Resources: corev1.ResourceRequirements{Requests: res, Limits: res}}},
		},
	}
	if w.NVLink {
		p.Annotations[AnnotationInterconn] = "nvlink"
	}
	if len(w.Products) > 0 {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: LabelProduct, Operator: corev1.NodeSelectorOpIn, Values: w.Products}},
			}}},
		}}
	}
	return p
}

// Demand says what w asks for, for people: "4x nvidia.com/gpu, NVLink, product NVIDIA-L40S".
func (w Workload) Demand() string {
	s := fmt.Sprintf("%dx %s", w.Count, w.Resource)
	if w.NVLink {
		s += ", NVLink"
	}
	for _, p := range w.Products {
		s += ", product " + p
	}
	return s
}
