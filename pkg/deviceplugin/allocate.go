package deviceplugin

import (
	"fmt"
	"path"
	"slices"
	"strings"

	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// VisibleDevicesEnv is the variable nvidia-container-runtime reads.
const VisibleDevicesEnv = "NVIDIA_VISIBLE_DEVICES"

const (
	// cdiKind is the CDI device kind NVIDIA's container toolkit generates.
	cdiKind = "nvidia.com/gpu"
	// volumeMountsDir is where the volume-mounts strategy lists devices, as
	// nvidia-container-runtime expects.
	volumeMountsDir = "/var/run/nvidia-container-devices"
)

// allocateContainer builds one container's response for the device IDs the
// kubelet chose.
func (m *Manager) allocateContainer(res Resource, ids []string) (*api.ContainerAllocateResponse, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("allocate request for %s names no devices", res.Name)
	}
	_, o := m.state()
	byID := make(map[string]Device, len(res.Devices))
	for _, d := range res.Devices {
		byID[d.ID] = d
	}
	var devs []Device
	seen := map[string]bool{}
	for _, id := range ids {
		d, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("allocate request names device %q, which %s does not have", id, res.Name)
		}
		if !seen[d.UUID] {
			seen[d.UUID] = true
			devs = append(devs, d)
		}
	}
	if res.Shared {
		if o.FailRequestsGreaterThanOne && len(ids) > 1 {
			return nil, fmt.Errorf("request for %d units of shared resource %s refused: failRequestsGreaterThanOne is set, so each container may ask for 1", len(ids), res.Name)
		}
		if len(devs) > 1 {
			uuids := make([]string, len(devs))
			for i, d := range devs {
				uuids[i] = d.UUID
			}
			return nil, fmt.Errorf("request for %d units of shared resource %s would span %d devices (%s); a shared request must be served by one GPU, and no single GPU had %d free units",
				len(ids), res.Name, len(devs), strings.Join(uuids, ", "), len(ids))
		}
	}
	names := make([]string, len(devs))
	cdi := make([]string, len(devs))
	for i, d := range devs {
		names[i] = d.UUID
		if o.ByIndex {
			names[i] = d.Ref
		}
		cdi[i] = cdiKind + "=" + names[i]
	}
	strategies := o.ListStrategies
	if len(strategies) == 0 {
		strategies = []string{ListEnvVar}
	}
	if slices.Contains(strategies, ListVolumeMounts) && slices.Contains(strategies, ListEnvVar) {
		return nil, fmt.Errorf("device list strategies %s and %s both set %s; choose one", ListEnvVar, ListVolumeMounts, VisibleDevicesEnv)
	}
	resp := &api.ContainerAllocateResponse{}
	for _, s := range strategies {
		switch s {
		case ListEnvVar:
			resp.Envs = map[string]string{VisibleDevicesEnv: strings.Join(names, ",")}
		case ListCDICRI:
			for _, n := range cdi {
				resp.CdiDevices = append(resp.CdiDevices, &api.CDIDevice{Name: n})
			}
		case ListCDIAnnotations:
			prefix := o.CDIAnnotationPrefix
			if prefix == "" {
				prefix = "cdi.k8s.io/"
			}
			key := prefix + "tessera-" + strings.NewReplacer("/", "_", ".", "_").Replace(res.Name)
			resp.Annotations = map[string]string{key: strings.Join(cdi, ",")}
		case ListVolumeMounts:
			// nvidia-container-runtime reads the device list from the mount
			// paths; the host side is only a placeholder.
			resp.Envs = map[string]string{VisibleDevicesEnv: volumeMountsDir}
			for _, n := range names {
				resp.Mounts = append(resp.Mounts, &api.Mount{HostPath: "/dev/null", ContainerPath: path.Join(volumeMountsDir, n)})
			}
		default:
			return nil, fmt.Errorf("unknown device list strategy %q (want one of %s)", s,
				strings.Join([]string{ListEnvVar, ListCDICRI, ListCDIAnnotations, ListVolumeMounts}, ", "))
		}
	}
	return resp, nil
}
