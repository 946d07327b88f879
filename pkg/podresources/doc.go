// Package podresources keeps a cached view of which pod, container and
// resource holds which device on this node, read from the kubelet's
// PodResources v1 gRPC API (k8s.io/kubelet/pkg/apis/podresources/v1).
//
// It owns the client connection, the refresh loop and the "who holds device X"
// index that telemetry (pod labels on GPU series) and the MIG reconcile loop
// (which pods hold a GPU that will change) share. The view is refreshed on an
// interval, never per caller request; when the kubelet is absent or a List
// call fails the previous view is kept and Status says why.
//
// It must not import k8s.io/kubernetes: it is part of the agent binary, which
// stays small. Its test server (package podresourcestest) may, because only
// tests import it.
package podresources
