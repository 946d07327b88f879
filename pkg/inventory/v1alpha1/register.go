package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of Tessera's resources.
const GroupName = "gpu.tessera.dev"

// Names of the GPUNode resource.
const (
	Kind     = "GPUNode"
	Resource = "gpunodes"
)

// SchemeGroupVersion is the group and version of this package's types.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// GroupVersionResource of GPUNodes, for REST paths and dynamic clients.
var GroupVersionResource = SchemeGroupVersion.WithResource(Resource)

var (
	// SchemeBuilder collects the functions that add this package's types to a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds GPUNode and GPUNodeList to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &GPUNode{}, &GPUNodeList{})
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
