// Package charts holds Tessera's Helm chart (charts/tessera) and its test:
// the chart rendered with helm for its default values and each values file of
// charts/tessera/ci, every rendered object applied to a real kube-apiserver,
// and the objects it shares with the kustomize base (CRD, RBAC, ConfigMaps,
// admission policy) checked to grant and hold the same. It holds no Go code
// the binaries use.
package charts
