package procmap

import (
	"bufio"
	"bytes"
	"regexp"
	"strings"
)

// Runtime names the container runtime a cgroup path belongs to.
type Runtime string

// Runtimes whose cgroup paths the parser recognises.
const (
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimeDocker     Runtime = "docker"
	// RuntimeUnknown is a container directory under a pod cgroup without a
	// runtime prefix: the cgroupfs driver's "<pod>/<id>" form, which
	// containerd and cri-dockerd both write.
	RuntimeUnknown Runtime = ""
)

// CgroupOwner is what a cgroup path says about its processes: the pod (by
// UID, in the API's dashed form) and the container (by runtime ID). PodUID
// is empty for a cgroup outside the kubelet's pods; ContainerID is empty for
// a pod-level cgroup or CRI-O's conmon.
type CgroupOwner struct {
	PodUID      string
	ContainerID string
	Runtime     Runtime
	// Conmon is set for CRI-O's container monitor (crio-conmon-<id>.scope):
	// a process of the pod that is not inside the container.
	Conmon bool
}

// InPod reports whether the cgroup belongs to a pod.
func (o CgroupOwner) InPod() bool { return o.PodUID != "" }

var (
	// A pod's cgroup: "pod<uid>" (cgroupfs) or "<prefix>-pod<uid>.slice"
	// (systemd, where the UID's dashes become underscores). Static pods have
	// 32-hex-digit UIDs (a hash of the manifest) without dashes.
	podSegment = regexp.MustCompile(`^(?:[a-z0-9_.-]*-)?pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}|[0-9a-fA-F]{32})(?:\.slice)?$`)
	// A container's cgroup below its pod's: "<id>" (cgroupfs),
	// "cri-containerd-<id>.scope", "crio-<id>.scope", "crio-<id>" (CRI-O
	// under cgroupfs), "docker-<id>.scope", "crio-conmon-<id>.scope".
	containerSegment = regexp.MustCompile(`^(cri-containerd-|crio-conmon-|crio-|docker-)?([0-9a-f]{64})(\.scope)?$`)
)

// ParseCgroupPath reads the pod and container from one cgroup path as it
// appears in /proc/<pid>/cgroup or under a cgroup mount. It looks for the
// pod segment anywhere in the path, so that paths below a cgroup namespace
// root ("/../../kubepods-…") and nested kubelets ("/kubelet.slice/
// kubelet-kubepods.slice/…") resolve too. ok is false for a path with no pod.
func ParseCgroupPath(path string) (CgroupOwner, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		m := podSegment.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		o := CgroupOwner{PodUID: canonicalUID(m[1])}
		if i+1 < len(segs) {
			if c := containerSegment.FindStringSubmatch(segs[i+1]); c != nil {
				o.ContainerID = c[2]
				switch c[1] {
				case "cri-containerd-":
					o.Runtime = RuntimeContainerd
				case "crio-":
					o.Runtime = RuntimeCRIO
				case "crio-conmon-":
					o.Runtime, o.Conmon, o.ContainerID = RuntimeCRIO, true, ""
				case "docker-":
					o.Runtime = RuntimeDocker
				}
			}
		}
		return o, true
	}
	return CgroupOwner{}, false
}

// canonicalUID turns a pod UID from a cgroup name into the API's form:
// systemd's underscores become dashes, upper case becomes lower case.
func canonicalUID(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}

// ProcCgroup is one parsed /proc/<pid>/cgroup file.
type ProcCgroup struct {
	// Path is the cgroup the owner was read from: the v2 path when it names
	// a pod, else the first v1 hierarchy's path that does, else the v2 path
	// (or the first v1 path on a v1-only host).
	Path  string
	Owner CgroupOwner
}

// ParseProcCgroup parses the contents of /proc/<pid>/cgroup
// ("hierarchy-ID:controller-list:cgroup-path" lines; "0::<path>" is the
// cgroup v2 line). On a hybrid host the v2 line is "/" for every process and
// the v1 hierarchies carry the pod, so every line is tried.
func ParseProcCgroup(data []byte) (ProcCgroup, bool) {
	var v2, firstV1 string
	var haveV2, haveV1 bool
	var fromV1 *ProcCgroup
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" {
			v2, haveV2 = path, true
			continue
		}
		if !haveV1 {
			firstV1, haveV1 = path, true
		}
		if fromV1 == nil {
			if o, ok := ParseCgroupPath(path); ok {
				fromV1 = &ProcCgroup{Path: path, Owner: o}
			}
		}
	}
	if haveV2 {
		if o, ok := ParseCgroupPath(v2); ok {
			return ProcCgroup{Path: v2, Owner: o}, true
		}
	}
	switch {
	case fromV1 != nil:
		return *fromV1, true
	case haveV2:
		return ProcCgroup{Path: v2}, true
	case haveV1:
		return ProcCgroup{Path: firstV1}, true
	}
	return ProcCgroup{}, false
}
