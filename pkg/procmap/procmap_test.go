package procmap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fileCgroups serves /proc/<pid>/cgroup contents from a map and counts reads.
type fileCgroups struct {
	files map[uint32]string
	reads int
}

func (f *fileCgroups) ReadCgroup(pid uint32) ([]byte, error) {
	f.reads++
	s, ok := f.files[pid]
	if !ok {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	return []byte(s), nil
}

type podMap map[string]PodInfo

func (m podMap) Pod(uid string) (PodInfo, bool) { p, ok := m[uid]; return p, ok }

func TestMapOwner(t *testing.T) {
	crio := "0::/kubepods.slice/kubepods-pod9c5f2a3e_1b7d_4c8e_9f0a_2b3c4d5e6f70.slice/crio-" + testContainer + ".scope\n"
	other := "0::/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/crio-" + testContainer + ".scope\n"
	sandbox := "0::/kubepods/pod" + testUID + "/" + "aa" + testContainer[2:] + "\n"
	cg := &fileCgroups{files: map[uint32]string{
		10: crio, 11: other, 12: "0::/system.slice/nvidia-persistenced.service\n", 13: sandbox,
	}}
	pods := podMap{testUID: {Namespace: "ml", Name: "trainer-0", Containers: map[string]string{testContainer: "cuda"}}}
	m, err := New(Options{Cgroups: cg, Pods: pods})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pid     uint32
		want    Owner
		wantErr error
	}{
		{10, Owner{Kind: KindPod, Namespace: "ml", Pod: "trainer-0", Container: "cuda"}, nil},
		{11, Owner{Kind: KindUnknownPod}, nil},
		{12, Owner{Kind: KindHost}, nil},
		{13, Owner{Kind: KindPod, Namespace: "ml", Pod: "trainer-0"}, nil},
		{99, Owner{}, ErrNoProcess},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(int(tt.pid)), func(t *testing.T) {
			got, err := m.Owner(tt.pid)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Owner error = %v, want %v", err, tt.wantErr)
			}
			if got.Kind != tt.want.Kind || got.Namespace != tt.want.Namespace || got.Pod != tt.want.Pod || got.Container != tt.want.Container {
				t.Errorf("Owner = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMapCachesForTTL(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	cg := &fileCgroups{files: map[uint32]string{7: "0::/system.slice/a.service\n"}}
	m, _ := New(Options{Cgroups: cg, Pods: podMap{}, TTL: 10 * time.Second, Clock: clk})
	for range 3 {
		if o, err := m.Owner(7); err != nil || o.CgroupPath != "/system.slice/a.service" {
			t.Fatalf("Owner = %+v, %v", o, err)
		}
	}
	if cg.reads != 1 {
		t.Errorf("reads within the TTL = %d, want 1", cg.reads)
	}
	cg.files[7] = "0::/kubepods/besteffort/pod" + testUID + "/" + testContainer + "\n"
	clk.SetTime(clk.Now().Add(10 * time.Second))
	o, err := m.Owner(7)
	if err != nil || o.Kind != KindUnknownPod || cg.reads != 2 {
		t.Errorf("after the TTL: %+v, %v, reads %d; want the new cgroup read once more", o, err, cg.reads)
	}
	delete(cg.files, 7)
	clk.SetTime(clk.Now().Add(10 * time.Second))
	if _, err := m.Owner(7); !errors.Is(err, ErrNoProcess) || m.Len() != 0 {
		t.Errorf("gone process: err %v, cached %d", err, m.Len())
	}
}

func TestMapIsBounded(t *testing.T) {
	cg := &fileCgroups{files: map[uint32]string{}}
	for pid := uint32(1); pid <= 1000; pid++ {
		cg.files[pid] = "0::/system.slice/x.service\n"
	}
	m, _ := New(Options{Cgroups: cg, Pods: podMap{}, MaxEntries: 100})
	for pid := uint32(1); pid <= 1000; pid++ {
		if _, err := m.Owner(pid); err != nil {
			t.Fatal(err)
		}
		if m.Len() > 100 {
			t.Fatalf("cache holds %d entries, bound 100", m.Len())
		}
	}
}

func TestProcFS(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte("0::/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := ProcFS{Root: root}
	if b, err := fs.ReadCgroup(42); err != nil || string(b) != "0::/x\n" {
		t.Errorf("ReadCgroup(42) = %q, %v", b, err)
	}
	if _, err := fs.ReadCgroup(43); !errors.Is(err, ErrNoProcess) {
		t.Errorf("ReadCgroup(43) error = %v, want ErrNoProcess", err)
	}
	// The real /proc: this process has a cgroup file that parses.
	b, err := ProcFS{}.ReadCgroup(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ParseProcCgroup(b); !ok {
		t.Errorf("own /proc/self/cgroup does not parse: %q", b)
	}
}

func TestNewRequiresInputs(t *testing.T) {
	if _, err := New(Options{Pods: podMap{}}); err == nil {
		t.Error("New without Cgroups succeeded")
	}
}
