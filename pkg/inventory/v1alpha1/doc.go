// Package v1alpha1 is the gpu.tessera.dev/v1alpha1 API: the GPUNode custom
// resource in which the gpu-agent publishes a node's GPU inventory (devices,
// MIG slices, share units, interconnect, health, allocations, layout state)
// for the scheduler and for people (`kubectl get gpunodes`).
//
// It owns the Go types, their generated deep copies, the scheme registration
// and the compact link-matrix encoding. The CRD YAML under
// manifests/base/crd is generated from these types by controller-gen
// (`make generate`). It must not import anything beyond k8s.io/apimachinery:
// both binaries link it, and the agent's footprint depends on it staying
// small.
//
// The package lives beside its publisher (pkg/inventory) and reader
// (pkg/inventory/client) rather than under a pkg/apis tree because it is the
// project's only API group; one folder per concern (DESIGN.md's layout).
//
// +kubebuilder:object:generate=true
// +groupName=gpu.tessera.dev
package v1alpha1
