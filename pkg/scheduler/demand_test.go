package scheduler

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// podBuilder builds test pods.
type podBuilder struct{ p corev1.Pod }

func newPod(name string) *podBuilder {
	b := &podBuilder{}
	b.p.Name, b.p.Namespace, b.p.UID = name, "default", types.UID("uid-"+name)
	return b
}

// container adds an app container with requests given as name=quantity pairs.
func (b *podBuilder) container(name string, reqs ...string) *podBuilder {
	b.p.Spec.Containers = append(b.p.Spec.Containers, corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: resList(reqs...)}})
	return b
}

func (b *podBuilder) initContainer(name string, sidecar bool, reqs ...string) *podBuilder {
	c := corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: resList(reqs...)}}
	if sidecar {
		always := corev1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
	}
	b.p.Spec.InitContainers = append(b.p.Spec.InitContainers, c)
	return b
}

func (b *podBuilder) annotate(k, v string) *podBuilder {
	if b.p.Annotations == nil {
		b.p.Annotations = map[string]string{}
	}
	b.p.Annotations[k] = v
	return b
}

func (b *podBuilder) requireProducts(op corev1.NodeSelectorOperator, values ...string) *podBuilder {
	b.p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: scoring.ProductLabel, Operator: op, Values: values}},
		}}},
	}}
	return b
}

func (b *podBuilder) preferProducts(values ...string) *podBuilder {
	if b.p.Spec.Affinity == nil {
		b.p.Spec.Affinity = &corev1.Affinity{}
	}
	if b.p.Spec.Affinity.NodeAffinity == nil {
		b.p.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	b.p.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.PreferredSchedulingTerm{{
		Weight:     10,
		Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: scoring.ProductLabel, Operator: corev1.NodeSelectorOpIn, Values: values}}},
	}}
	return b
}

func (b *podBuilder) nodeSelector(k, v string) *podBuilder {
	if b.p.Spec.NodeSelector == nil {
		b.p.Spec.NodeSelector = map[string]string{}
	}
	b.p.Spec.NodeSelector[k] = v
	return b
}

func (b *podBuilder) obj() *corev1.Pod { return b.p.DeepCopy() }

func resList(kv ...string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		out[corev1.ResourceName(k)] = resource.MustParse(v)
	}
	return out
}

func sharedNames(names ...string) func(corev1.ResourceName) bool {
	return func(n corev1.ResourceName) bool { return slices.Contains(names, string(n)) }
}

func TestReadPod(t *testing.T) {
	shared := sharedNames("nvidia.com/gpu.shared")
	tests := []struct {
		name    string
		pod     *corev1.Pod
		want    PodDemand
		wantErr string
	}{
		{name: "cpu only", pod: newPod("a").container("c", "cpu=500m", "memory=1Gi").obj(),
			want: PodDemand{CPU: 500, Memory: 1024}},
		{name: "whole gpus summed over app containers", pod: newPod("a").container("c1", "nvidia.com/gpu=2", "cpu=2").container("c2", "nvidia.com/gpu=1", "cpu=1").obj(),
			want: PodDemand{Resource: ResourceGPU, Count: 3, CPU: 3000}},
		{name: "init container larger than the app containers wins", pod: newPod("a").initContainer("i", false, "nvidia.com/gpu=4").container("c", "nvidia.com/gpu=2").obj(),
			want: PodDemand{Resource: ResourceGPU, Count: 4}},
		{name: "sidecar adds to the app containers", pod: newPod("a").initContainer("s", true, "nvidia.com/gpu=1").container("c", "nvidia.com/gpu=2").obj(),
			want: PodDemand{Resource: ResourceGPU, Count: 3}},
		{name: "mig slice", pod: newPod("a").container("c", "nvidia.com/mig-1g.10gb=1").obj(),
			want: PodDemand{Resource: "nvidia.com/mig-1g.10gb", Count: 1}},
		{name: "share units", pod: newPod("a").container("c", "nvidia.com/gpu.shared=3").obj(),
			want: PodDemand{Resource: "nvidia.com/gpu.shared", Count: 3}},
		{name: "an unknown nvidia resource is not a gpu demand", pod: newPod("a").container("c", "nvidia.com/vgpu=1").obj(),
			want: PodDemand{}},
		{name: "memory rounds up to MiB", pod: newPod("a").container("c", "memory=1500k").obj(),
			want: PodDemand{Memory: 2}},
		{name: "nvlink annotation", pod: newPod("a").container("c", "nvidia.com/gpu=4").annotate(AnnotationInterconnect, "nvlink").obj(),
			want: PodDemand{Resource: ResourceGPU, Count: 4, Interconnect: InterconnectNVLink}},
		{name: "preference annotation", pod: newPod("a").container("c", "nvidia.com/gpu=1").annotate(AnnotationPreferredProducts, " NVIDIA-L40S,NVIDIA-H100-80GB-HBM3,,NVIDIA-L40S ").obj(),
			want: PodDemand{Resource: ResourceGPU, Count: 1, Preferred: []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S"}}},

		{name: "whole gpus and shares in one container", pod: newPod("a").container("train", "nvidia.com/gpu=1", "nvidia.com/gpu.shared=2").obj(),
			wantErr: `container "train" asks for nvidia.com/gpu and nvidia.com/gpu.shared: whole GPUs and shares of a GPU cannot be mixed in one container`},
		{name: "mig and whole in one container", pod: newPod("a").container("c", "nvidia.com/gpu=1", "nvidia.com/mig-1g.10gb=1").obj(),
			wantErr: "whole GPUs and MIG slices cannot be mixed"},
		{name: "two kinds in two containers", pod: newPod("a").container("c1", "nvidia.com/gpu=1").container("c2", "nvidia.com/mig-1g.10gb=1").obj(),
			wantErr: `container "c1" asks for nvidia.com/gpu and container "c2" for nvidia.com/mig-1g.10gb: Tessera places one kind of GPU device per pod`},
		{name: "fractional count", pod: newPod("a").container("c", "nvidia.com/gpu=500m").obj(),
			wantErr: "pod asks for 500m of nvidia.com/gpu: want a whole number from 1 to 1048576"},
		{name: "huge count", pod: newPod("a").container("c", "nvidia.com/gpu=1e9").obj(),
			wantErr: "want a whole number from 1 to"},
		{name: "bad interconnect", pod: newPod("a").container("c", "nvidia.com/gpu=2").annotate(AnnotationInterconnect, "fast").obj(),
			wantErr: `annotation gpu.tessera.dev/interconnect is "fast": want "nvlink" or no annotation`},
		{name: "bad preference", pod: newPod("a").container("c", "nvidia.com/gpu=2").annotate(AnnotationPreferredProducts, "H100 80GB").obj(),
			wantErr: `annotation gpu.tessera.dev/preferred-products lists "H100 80GB": want nvidia.com/gpu.product label values`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPod(tt.pod, shared)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadPod error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadPod: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(PodDemand{})); diff != "" {
				t.Errorf("ReadPod (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodDemandProducts(t *testing.T) {
	known := []string{"NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S"}
	tests := []struct {
		name                   string
		pod                    *corev1.Pod
		wantAllowed, wantPrefd []string
		wantErr                string
	}{
		{name: "no constraint", pod: newPod("a").container("c", "nvidia.com/gpu=1").obj()},
		{name: "required In", pod: newPod("a").requireProducts(corev1.NodeSelectorOpIn, "NVIDIA-L40S").obj(), wantAllowed: []string{"NVIDIA-L40S"}},
		{name: "required NotIn over the known products", pod: newPod("a").requireProducts(corev1.NodeSelectorOpNotIn, "NVIDIA-L40S").obj(),
			wantAllowed: []string{"NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"}},
		{name: "nodeSelector", pod: newPod("a").nodeSelector(scoring.ProductLabel, "NVIDIA-H100-80GB-HBM3").obj(), wantAllowed: []string{"NVIDIA-H100-80GB-HBM3"}},
		{name: "nodeSelector outside the affinity", pod: newPod("a").requireProducts(corev1.NodeSelectorOpIn, "NVIDIA-L40S").nodeSelector(scoring.ProductLabel, "NVIDIA-H100-80GB-HBM3").obj(),
			wantErr: "allow no product in common"},
		{name: "preferred affinity and annotation merge", pod: newPod("a").preferProducts("NVIDIA-L40S").annotate(AnnotationPreferredProducts, "NVIDIA-H100-80GB-HBM3").obj(),
			wantPrefd: []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S"}},
		{name: "Gt on the product", pod: newPod("a").requireProducts(corev1.NodeSelectorOpGt, "1").obj(), wantErr: "operator Gt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ReadPod(tt.pod, nil)
			if err != nil {
				t.Fatalf("ReadPod: %v", err)
			}
			allowed, prefd, err := d.Products(known)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Products error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Products: %v", err)
			}
			if diff := cmp.Diff(tt.wantAllowed, allowed, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("allowed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPrefd, prefd, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("preferred (-want +got):\n%s", diff)
			}
		})
	}
}
