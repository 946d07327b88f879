// Package inventory publishes a node's GPU inventory from the gpu-agent: the
// GPUNode custom resource (gpu.tessera.dev/v1alpha1, types in
// pkg/inventory/v1alpha1, client in pkg/inventory/client) and the node labels
// NVIDIA's GPU Feature Discovery writes (nvidia.com/gpu.product, ...), so
// that the scheduler and existing manifests' node affinity see the node's
// GPUs.
//
// It owns turning the agent's observations (the device plugin's machine and
// resources, GPU health, the PodResources view, the layout labels) into a
// status and labels (BuildStatus, BuildLabels: pure), and writing them with
// server-side apply only when they change, plus a heartbeat (Publisher). It
// reads its inputs through narrow interfaces declared here; it must not
// discover GPUs, change layouts or labels it does not own, or import
// k8s.io/kubernetes (the agent links it).
package inventory
