// Package nvmlbackend implements Tessera's GPU backend over NVML through
// github.com/NVIDIA/go-nvml. The same code runs against the real libnvidia-ml
// and against the simulated machines of package sim, which present an
// nvml.Interface; that is what makes every hardware path testable without a GPU.
//
// It owns the translation between NVML and the pkg/gpu model: NVML return codes
// become pkg/gpu error values here and nowhere else, and no nvml type leaves this
// package. It initialises NVML once per Backend (and the process shares one
// Backend for the real library, see System). It must not make policy decisions
// (which layout, which device is healthy): that belongs to its callers.
package nvmlbackend
