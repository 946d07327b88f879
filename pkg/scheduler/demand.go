package scheduler

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/tessera-gpu/tessera/pkg/inventory/v1alpha1"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Resource names and annotations a pod uses to talk to Tessera.
const (
	// ResourceGPU is the whole-GPU extended resource (NVIDIA's device
	// plugin name). On a node whose GPUs are time-shared under this name (no
	// rename) it counts share units instead; the node's GPUNode says which.
	ResourceGPU corev1.ResourceName = "nvidia.com/gpu"
	// MIGResourcePrefix starts the name of a MIG slice resource under the
	// mixed strategy: nvidia.com/mig-1g.10gb.
	MIGResourcePrefix = "nvidia.com/mig-"

	// AnnotationPreferredProducts lists GPU products the pod prefers, comma
	// separated ("NVIDIA-H100-80GB-HBM3,NVIDIA-A100-SXM4-80GB"), in addition
	// to the products of its preferred node affinity on nvidia.com/gpu.product.
	AnnotationPreferredProducts = "gpu.tessera.dev/preferred-products"
	// AnnotationInterconnect asks for a GPU set of a given interconnect:
	// "nvlink" requires every pair of the pod's GPUs to be NVLink-connected.
	AnnotationInterconnect = "gpu.tessera.dev/interconnect"
	// AnnotationDevices is written by PreBind: the devices the scheduler
	// planned for the pod on its node, GPU or MIG UUIDs ("GPU-…" or
	// "MIG-…"), comma separated; the gpu-agent's device plugin follows it.
	AnnotationDevices = v1alpha1.AnnotationDevices
)

// Interconnect is a required interconnect of a multi-GPU set.
type Interconnect string

// Interconnect values of AnnotationInterconnect.
const (
	// InterconnectAny accepts any set (the annotation is absent).
	InterconnectAny Interconnect = ""
	// InterconnectNVLink requires every pair of the set to share an NVLink.
	InterconnectNVLink Interconnect = "nvlink"
)

// maxCount bounds a device count so that later arithmetic cannot overflow;
// no node has more units of anything.
const maxCount = 1 << 20

// PodDemand is a pod's GPU demand as its spec states it, before any node is
// known: which GPU resource it asks for and how much, its CPU and memory, its
// product constraints and the interconnect it requires. Whether Count means
// whole GPUs, share units or a MIG slice depends on how a node advertises
// Resource (nodeModel.resource); the products its affinity allows depend on
// the products the cluster has (Products).
type PodDemand struct {
	// Resource is the GPU resource asked for; empty for a pod without GPUs.
	Resource corev1.ResourceName
	// Count is the pod's effective request of Resource (the larger of its
	// app containers' sum and any init container, as kube-scheduler counts).
	Count int64
	// CPU is in milli-CPU, Memory in MiB (rounded up).
	CPU, Memory int64
	// Interconnect is the interconnect the pod requires of its GPU set.
	Interconnect Interconnect
	// Preferred are the products of AnnotationPreferredProducts.
	Preferred []string

	affinity        *corev1.Affinity
	selectorProduct string
}

// IsMIGResource reports whether name is a mixed-strategy MIG resource and
// returns its profile ("1g.10gb").
func IsMIGResource(name corev1.ResourceName) (string, bool) {
	p, ok := strings.CutPrefix(string(name), MIGResourcePrefix)
	return p, ok && p != ""
}

// ReadPod reads pod's GPU demand. shared reports whether a resource name is
// advertised as time-shared units by some node (from the GPUNodes); it lets
// ReadPod see a container that asks for whole GPUs and shares at once.
//
// It refuses, with a message that names the container, the resources and
// what is allowed: a container that mixes whole GPUs, MIG slices or shares;
// a pod whose containers ask for different GPU resources (Tessera places
// one kind of GPU device per pod); a count that is not a positive integer
// within bounds; an interconnect or preference annotation with a value
// outside what is allowed.
func ReadPod(pod *corev1.Pod, shared func(corev1.ResourceName) bool) (PodDemand, error) {
	isGPU := func(n corev1.ResourceName) bool {
		if n == ResourceGPU {
			return true
		}
		if _, ok := IsMIGResource(n); ok {
			return true
		}
		return shared != nil && shared(n)
	}
	var d PodDemand
	owner := ""
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			c := &cs[i]
			var names []string
			for n, q := range c.Resources.Requests {
				if isGPU(n) && !q.IsZero() {
					names = append(names, string(n))
				}
			}
			slices.Sort(names)
			if len(names) > 1 {
				return PodDemand{}, fmt.Errorf("container %q asks for %s: %s cannot be mixed in one container; ask for one of them",
					c.Name, strings.Join(names, " and "), mixWhat(names, shared))
			}
			if len(names) == 1 {
				n := corev1.ResourceName(names[0])
				if d.Resource != "" && d.Resource != n {
					return PodDemand{}, fmt.Errorf("container %q asks for %s and container %q for %s: Tessera places one kind of GPU device per pod; ask for the same resource in every container",
						owner, d.Resource, c.Name, n)
				}
				d.Resource, owner = n, c.Name
			}
		}
	}
	reqs := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	if d.Resource != "" {
		q := reqs[d.Resource]
		v, ok := q.AsInt64()
		if !ok || v < 1 || v > maxCount || q.MilliValue() != v*1000 {
			return PodDemand{}, fmt.Errorf("pod asks for %s of %s: want a whole number from 1 to %d", q.String(), d.Resource, maxCount)
		}
		d.Count = v
	}
	if q, ok := reqs[corev1.ResourceCPU]; ok {
		d.CPU = max(0, q.MilliValue())
	}
	if q, ok := reqs[corev1.ResourceMemory]; ok {
		d.Memory = max(0, (q.Value()+(1<<20)-1)>>20)
	}
	switch v := Interconnect(pod.Annotations[AnnotationInterconnect]); v {
	case InterconnectAny, InterconnectNVLink:
		d.Interconnect = v
	default:
		return PodDemand{}, fmt.Errorf("annotation %s is %q: want %q or no annotation", AnnotationInterconnect, string(v), InterconnectNVLink)
	}
	if v, ok := pod.Annotations[AnnotationPreferredProducts]; ok {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if errs := validation.IsValidLabelValue(p); len(errs) > 0 {
				return PodDemand{}, fmt.Errorf("annotation %s lists %q: want nvidia.com/gpu.product label values separated by commas (%s)", AnnotationPreferredProducts, p, strings.Join(errs, "; "))
			}
			d.Preferred = append(d.Preferred, p)
		}
		slices.Sort(d.Preferred)
		d.Preferred = slices.Compact(d.Preferred)
	}
	d.affinity = pod.Spec.Affinity
	d.selectorProduct = pod.Spec.NodeSelector[scoring.ProductLabel]
	return d, nil
}

// mixWhat names the kinds a container mixed.
func mixWhat(names []string, shared func(corev1.ResourceName) bool) string {
	var kinds []string
	for _, n := range names {
		k := "whole GPUs"
		if _, ok := IsMIGResource(corev1.ResourceName(n)); ok {
			k = "MIG slices"
		} else if shared != nil && shared(corev1.ResourceName(n)) {
			k = "shares of a GPU"
		}
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 1 {
		return "two GPU resources"
	}
	return strings.Join(kinds, " and ")
}

// Products returns the products the pod may use and prefers, given the
// products the cluster has (known): its required node affinity and
// nodeSelector on nvidia.com/gpu.product, and its preferred affinity plus
// AnnotationPreferredProducts. allowed is nil when every product will do.
func (d *PodDemand) Products(known []string) (allowed, preferred []string, err error) {
	allowed, preferred, err = scoring.ProductsFromAffinity(d.affinity, known)
	if err != nil {
		return nil, nil, err
	}
	if p := d.selectorProduct; p != "" {
		if allowed != nil && !slices.Contains(allowed, p) {
			return nil, nil, fmt.Errorf("nodeSelector %s=%s and the required node affinity allow no product in common", scoring.ProductLabel, p)
		}
		allowed = []string{p}
	}
	preferred = append(preferred, d.Preferred...)
	slices.Sort(preferred)
	return allowed, slices.Compact(preferred), nil
}
