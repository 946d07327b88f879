// Package gpu is Tessera's model of a GPU machine: the devices, their MIG slices,
// the pairwise interconnect, driver versions, telemetry samples and device events,
// plus the error values every backend returns.
//
// It owns plain data and the small capability interfaces a backend provides. It
// must not talk to hardware, Kubernetes or the network: backends live in
// sub-packages (nvmlbackend over go-nvml, sim for simulated machines) and are
// chosen in one place (package backend). Consumers declare the narrow interfaces
// they need next to their own code.
package gpu
