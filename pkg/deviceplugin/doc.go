// Package deviceplugin advertises a node's GPUs to the kubelet through the
// device-plugin API (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1): whole GPUs,
// MIG devices under NVIDIA's none/single/mixed strategies, and time-sliced
// shares, with one gRPC server per extended resource.
//
// It owns turning a gpu.Machine plus a sharing configuration into resources
// (resources.go, pure), serving and registering them (server.go, manager.go),
// and answering Allocate and GetPreferredAllocation. Device choice is delegated
// to pkg/topology so the scheduler models the same allocation; health verdicts
// come from pkg/deviceplugin/health. It must not talk to NVML directly or make
// scheduling decisions, and it never advertises a device it cannot hand out.
package deviceplugin
