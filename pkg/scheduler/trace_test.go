package scheduler

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/replay"
	"github.com/tessera-gpu/tessera/pkg/scoring"
)

const (
	traceNodesCSV = `sn,cpu_milli,memory_mib,gpu,model
n-g2,96000,786432,8,G2
n-p100,64000,262144,2,P100
n-t4,32000,131072,1,T4
`
	tracePodsCSV = `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec
p-cpu,4000,8192,0,0,
p-share,6000,12288,1,460,
p-whole,12000,16384,1,1000,
p-four,32000,65536,4,1000,G2
p-spec,8000,16384,1,500,P100|T4
p-unknown-model,1000,1024,1,1000,V100M99
`
)

// TestTraceObjectsModelAsTheReplay checks that the plugin reads the Node,
// GPUNode and Pods replay.TraceNode, TraceGPUNode and TracePod build from
// trace rows (what test/replaysched creates for the real kube-scheduler)
// exactly as the trace replay describes the same rows to the scorer
// (replay.TraceNodeSpec, replay.PodDemand): same GPU states and topology,
// same demands, so that both score the same nodes the same way.
func TestTraceObjectsModelAsTheReplay(t *testing.T) {
	c, err := replay.ReadCluster("nodes.csv", strings.NewReader(traceNodesCSV))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := replay.ReadTrace("pods.csv", strings.NewReader(tracePodsCSV), c)
	if err != nil {
		t.Fatal(err)
	}
	st := replay.NewState(c)
	models := map[string]*nodeModel{}
	for n := range c.Nodes {
		name := c.Nodes[n].Name
		t.Run("node "+name, func(t *testing.T) {
			m, err := buildModel(replay.TraceGPUNode(c, n, name, t0))
			if err != nil {
				t.Fatalf("buildModel: %v", err)
			}
			models[name] = m
			want, err := scoring.NewNodeState(replay.TraceNodeSpec(c, n, &st.Nodes[n]))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.state.GPUs, want.GPUs) || !reflect.DeepEqual(m.state.Topology, want.Topology) {
				t.Errorf("GPUNode models as\n%+v\n%+v\nthe replay's node is\n%+v\n%+v", m.state.GPUs, m.state.Topology, want.GPUs, want.Topology)
			}
			kn := replay.TraceNode(c, n, name)
			for r, wantQ := range map[corev1.ResourceName]int64{replay.WholeResource: int64(c.Nodes[n].GPUs), replay.ShareResource: int64(c.Nodes[n].GPUs) * replay.MilliPerGPU} {
				if q := kn.Status.Allocatable[r]; q.Value() != wantQ {
					t.Errorf("node allocatable %s = %s, want %d", r, q.String(), wantQ)
				}
			}
			if kn.Labels[scoring.ProductLabel] != c.Nodes[n].Model {
				t.Errorf("product label %q, want %q", kn.Labels[scoring.ProductLabel], c.Nodes[n].Model)
			}
		})
	}
	m := models["n-g2"]
	if m == nil {
		t.Fatal("no model of n-g2")
	}
	shared := func(r corev1.ResourceName) bool { return r == replay.ShareResource }
	for i := range tr.Pods {
		p := &tr.Pods[i]
		t.Run("pod "+p.Name, func(t *testing.T) {
			kp, err := replay.TracePod(c, p, p.Name)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ReadPod(kp, shared)
			if err != nil {
				t.Fatalf("ReadPod: %v", err)
			}
			allowed, preferred, err := d.Products(c.Models)
			if err != nil {
				t.Fatalf("Products: %v", err)
			}
			want, ok := replay.PodDemand(p, c.Models)
			if !ok {
				t.Fatal("the replay cannot express the pod")
			}
			if want.Allowed != nil && len(want.Allowed) == 0 {
				// Only models no node has: the plugin refuses the pod in
				// PreFilter, the replay finds no node.
				if slices.ContainsFunc(allowed, func(a string) bool { return slices.Contains(c.Models, a) }) {
					t.Errorf("allowed products %v include a model of the cluster %v", allowed, c.Models)
				}
				return
			}
			mode, has := m.mode(d.Resource)
			if !has {
				t.Fatalf("node n-g2 does not advertise %s", d.Resource)
			}
			got, err := d.demandOn(mode, allowed, preferred)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got.Allowed)
			slices.Sort(want.Allowed)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("the plugin reads the pod as\n%+v\nthe replay as\n%+v", got, want)
			}
		})
	}
}
