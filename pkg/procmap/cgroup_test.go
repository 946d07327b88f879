package procmap

import (
	"os"
	"path/filepath"
	"testing"
)

const (
	testUID       = "9c5f2a3e-1b7d-4c8e-9f0a-2b3c4d5e6f70"
	testContainer = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa99"
)

func TestParseProcCgroupSamples(t *testing.T) {
	tests := []struct {
		file     string
		want     CgroupOwner
		wantPath string
	}{
		{"containerd-systemd-v2.cgroup", CgroupOwner{testUID, testContainer, RuntimeContainerd, false},
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/cri-containerd-" + testContainer + ".scope"},
		{"containerd-systemd-hybrid.cgroup", CgroupOwner{testUID, testContainer, RuntimeContainerd, false},
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/cri-containerd-" + testContainer + ".scope"},
		{"containerd-cgroupfs-v1.cgroup", CgroupOwner{testUID, testContainer, RuntimeUnknown, false},
			"/kubepods/burstable/pod" + testUID + "/" + testContainer},
		{"containerd-cgroupfs-v2-guaranteed.cgroup", CgroupOwner{testUID, testContainer, RuntimeUnknown, false},
			"/kubepods/pod" + testUID + "/" + testContainer},
		{"crio-systemd-v2.cgroup", CgroupOwner{testUID, testContainer, RuntimeCRIO, false},
			"/kubepods.slice/kubepods-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/crio-" + testContainer + ".scope"},
		{"crio-systemd-v2-conmon.cgroup", CgroupOwner{testUID, "", RuntimeCRIO, true},
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/crio-conmon-" + testContainer + ".scope"},
		{"crio-cgroupfs-v1.cgroup", CgroupOwner{testUID, testContainer, RuntimeCRIO, false},
			"/kubepods/besteffort/pod" + testUID + "/crio-" + testContainer},
		{"docker-systemd-v1.cgroup", CgroupOwner{testUID, testContainer, RuntimeDocker, false},
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/docker-" + testContainer + ".scope"},
		{"kind-nested-v2.cgroup", CgroupOwner{testUID, testContainer, RuntimeContainerd, false},
			"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/cri-containerd-" + testContainer + ".scope"},
		{"cgroupns-relative-v2.cgroup", CgroupOwner{testUID, testContainer, RuntimeContainerd, false},
			"/../../kubepods-besteffort-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/cri-containerd-" + testContainer + ".scope"},
		{"static-pod-v2.cgroup", CgroupOwner{"6f3a9c2e1b0d4f8a9e7c5b3a1d2e4f60", testContainer, RuntimeContainerd, false},
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f3a9c2e1b0d4f8a9e7c5b3a1d2e4f60.slice/cri-containerd-" + testContainer + ".scope"},
		{"pod-level-v2.cgroup", CgroupOwner{PodUID: testUID},
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice"},
		{"host-systemd-v2.cgroup", CgroupOwner{}, "/system.slice/nvidia-persistenced.service"},
		{"host-v1.cgroup", CgroupOwner{}, "/user.slice/user-1000.slice/session-3.scope"},
		{"host-hybrid.cgroup", CgroupOwner{}, "/system.slice/nv-hostengine.service"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := ParseProcCgroup(data)
			if !ok {
				t.Fatalf("ParseProcCgroup found no cgroup")
			}
			if got.Owner != tt.want || got.Path != tt.wantPath {
				t.Errorf("ParseProcCgroup = %+v\nwant owner %+v path %s", got, tt.want, tt.wantPath)
			}
		})
	}
	files, _ := filepath.Glob("testdata/*.cgroup")
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("sample %s has no test case", f)
		}
	}
}

func TestParseCgroupPathRejects(t *testing.T) {
	for _, p := range []string{
		"/", "", "/kubepods.slice", "/kubepods/burstable", "/system.slice/pod-notauid.service",
		"/kubepods/burstable/podXYZ/" + testContainer,
		"/user.slice/podman-1234.scope",
	} {
		if o, ok := ParseCgroupPath(p); ok {
			t.Errorf("ParseCgroupPath(%q) = %+v, want no pod", p, o)
		}
	}
	// A container directory that is not a runtime ID leaves the container empty.
	o, ok := ParseCgroupPath("/kubepods/besteffort/pod" + testUID + "/not-a-container")
	if !ok || o.ContainerID != "" || o.PodUID != testUID {
		t.Errorf("pod with odd child = %+v, %v", o, ok)
	}
}

func TestParseProcCgroupEmpty(t *testing.T) {
	if _, ok := ParseProcCgroup([]byte("garbage\n")); ok {
		t.Error("ParseProcCgroup accepted a file without cgroup lines")
	}
}
