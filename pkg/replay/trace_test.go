package replay

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestReadClusterBadInput(t *testing.T) {
	tests := []struct {
		name     string
		csv      string
		wantErr  string   // a fatal error containing this
		wantMsgs []string // skipped-row messages, in order
		wantN    int      // nodes kept
	}{
		{
			name:    "empty file",
			csv:     "",
			wantErr: "nodes.csv:1: empty file",
		},
		{
			name:    "missing column",
			csv:     "sn,cpu_milli,memory_mib,gpu\nn1,1,1,1\n",
			wantErr: "nodes.csv:1: header lacks column(s) model",
		},
		{
			name:    "no valid row",
			csv:     nodeHeader + "n1,x,1,1,T4\n",
			wantErr: "nodes.csv: no valid node rows",
		},
		{
			name: "every bad row kind",
			csv: nodeHeader +
				"n1,abc,1024,2,T4\n" +
				"n2,1000,-5,2,T4\n" +
				"n3,1000,1024,2.5,T4\n" +
				"n4,1000,1024\n" +
				",1000,1024,2,T4\n" +
				"n5,1000,1024,2,\n" +
				"n6,10\"00,1024,2,T4\n" +
				"ok,1000,1024,2,T4\n" +
				"n7,1000,1024,2,\"T4\n" +
				"lost,1000,1024,2,T4\n",
			wantMsgs: []string{
				`nodes.csv:2: node n1: column cpu_milli: "abc" is not an integer`,
				`nodes.csv:3: node n2: column memory_mib: -5 is negative`,
				`nodes.csv:4: node n3: column gpu: "2.5" is not an integer`,
				`nodes.csv:5: row has 3 fields, header has 5`,
				`nodes.csv:6: column sn: empty node name`,
				`nodes.csv:7: node n5: column model: empty model for a node with 2 GPUs`,
				`nodes.csv:8: malformed csv: bare " in non-quoted-field`,
				`nodes.csv:10: malformed csv: extraneous or missing " in quoted-field`,
			},
			wantN: 1,
		},
		{
			name:     "duplicate node",
			csv:      nodeHeader + "a,1,1,1,T4\nb,1,1,1,T4\na,1,1,1,T4\n",
			wantMsgs: []string{`nodes.csv:4: duplicate node "a" (first on line 2)`},
			wantN:    2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ReadCluster("nodes.csv", strings.NewReader(tt.csv))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadCluster: %v", err)
			}
			var got []string
			for _, i := range c.Issues.List {
				got = append(got, i.String())
			}
			// An unterminated quote swallows the rest of the file, as
			// in any csv reader; the rows before it are kept.
			if !reflect.DeepEqual(got, tt.wantMsgs) {
				t.Errorf("issues:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.wantMsgs, "\n"))
			}
			if len(c.Nodes) != tt.wantN {
				t.Errorf("kept %d nodes, want %d", len(c.Nodes), tt.wantN)
			}
			if c.Issues.Skipped() != len(c.Issues.List) {
				t.Errorf("node issues must all be skipped rows: %+v", c.Issues.List)
			}
		})
	}
}

func TestReadCluster(t *testing.T) {
	c := newCluster(t, "b,64000,262144,8,G2", "a,96000,786432,2,T4", "c,32000,65536,0,")
	if got := []string{c.Nodes[0].Name, c.Nodes[1].Name, c.Nodes[2].Name}; !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("nodes not sorted by name: %v", got)
	}
	if !reflect.DeepEqual(c.Models, []string{"G2", "T4"}) {
		t.Errorf("models = %v", c.Models)
	}
	if c.Nodes[0].ModelID != 1 || c.Nodes[1].ModelID != 0 || c.Nodes[2].ModelID != -1 {
		t.Errorf("model ids = %d %d %d", c.Nodes[0].ModelID, c.Nodes[1].ModelID, c.Nodes[2].ModelID)
	}
	if c.TotalGPUs() != 10 || c.TotalGPUMilli() != 10000 || c.TotalCPU() != 192000 {
		t.Errorf("totals = %d gpus, %d milli, %d cpu", c.TotalGPUs(), c.TotalGPUMilli(), c.TotalCPU())
	}
	if c.Nodes[0].PodLimit != DefaultPodLimit || c.Nodes[0].Memory != 786432 {
		t.Errorf("node a = %+v", c.Nodes[0])
	}
}

func TestReadTraceBadInput(t *testing.T) {
	c := newCluster(t, "n1,64000,262144,8,G2", "n2,32000,131072,2,T4")
	tests := []struct {
		name     string
		csv      string
		wantErr  string
		wantMsgs []string
		wantPods []string
	}{
		{
			name:    "missing column",
			csv:     "name,cpu_milli,memory_mib,num_gpu\np,1,1,1\n",
			wantErr: "p.csv:1: header lacks column(s) gpu_milli",
		},
		{
			name:    "empty",
			csv:     "",
			wantErr: "p.csv:1: empty file",
		},
		{
			name: "bad rows",
			csv: podHeader +
				"a,1000,1024,1,x,\n" +
				"b,1000,1024,-1,1000,\n" +
				"c,1e3,1024,1,1000,\n" +
				"d,1000\n" +
				",1000,1024,0,0,\n" +
				"ok,1000,1024,1,1000,\n" +
				"ok,1000,1024,1,1000,\n",
			wantMsgs: []string{
				`p.csv:2: pod a: column gpu_milli: "x" is not an integer`,
				`p.csv:3: pod b: column num_gpu: -1 is negative`,
				`p.csv:4: pod c: column cpu_milli: "1e3" is not an integer`,
				`p.csv:5: row has 2 fields, header has 6`,
				`p.csv:6: column name: empty pod name`,
				`p.csv:8: duplicate pod "ok" (first on line 7)`,
			},
			wantPods: []string{"ok"},
		},
		{
			name: "warnings keep the row",
			csv: podHeader +
				"u1,1000,1024,1,500,V100|T4\n" +
				"u2,1000,1024,1,500,H100\n" +
				"z,1000,1024,1,0,\n" +
				"big,1000,1024,4,1000,T4\n",
			wantMsgs: []string{
				`p.csv:2: pod u1: gpu_spec "V100|T4": unknown gpu model "V100" (the nodes have G2, T4)`,
				`p.csv:3: pod u2: gpu_spec "H100": unknown gpu model "H100" (the nodes have G2, T4)`,
				`p.csv:3: pod u2 fits no node even in an empty cluster: no node has cpu_milli >= 1000, memory_mib >= 1024 and 1 GPUs of a model allowed by gpu_spec "H100"`,
				`p.csv:4: pod z: num_gpu is 1 but gpu_milli is 0: treated as a pod without GPUs`,
				`p.csv:5: pod big fits no node even in an empty cluster: no node has cpu_milli >= 1000, memory_mib >= 1024 and 4 GPUs of a model allowed by gpu_spec "T4"`,
			},
			wantPods: []string{"big", "u1", "u2", "z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ReadTrace("p.csv", strings.NewReader(tt.csv), c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadTrace: %v", err)
			}
			var got []string
			for _, i := range tr.Issues.List {
				got = append(got, i.String())
			}
			if !reflect.DeepEqual(got, tt.wantMsgs) {
				t.Errorf("issues:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.wantMsgs, "\n"))
			}
			var names []string
			for _, p := range tr.Pods {
				names = append(names, p.Name)
			}
			if !reflect.DeepEqual(names, tt.wantPods) {
				t.Errorf("pods = %v, want %v", names, tt.wantPods)
			}
		})
	}
}

func TestReadTraceFields(t *testing.T) {
	c := newCluster(t, "n1,64000,262144,8,G2", "n2,32000,131072,2,T4")
	tr := newTrace(t, c,
		"p-2,4000,8192,0,0,",
		"p-1,8000,16384,1,1500,nan",
		"p-3,8000,16384,1,-20,",
		"p-0,6000,12288,1,460,T4||G2|G2",
		"p-4,6000,12288,1,460,",
	)
	if tr.Name != "test" {
		t.Errorf("trace name = %q", tr.Name)
	}
	want := []struct {
		name string
		k    int
		g    int64
		spec string
		t4   bool
		g2   bool
	}{
		{"p-0", 1, 460, "T4||G2|G2", true, true},
		{"p-1", 1, 1000, "", true, true}, // clamped, NaN spec is none
		{"p-2", 0, 0, "", true, true},
		{"p-3", 0, 0, "", true, true}, // gpu_milli <= 0: no GPU
		{"p-4", 1, 460, "", true, true},
	}
	for i, w := range want {
		p := tr.Pods[i]
		if p.Name != w.name || p.K != w.k || p.G != w.g || p.Spec != w.spec ||
			p.AllowsModel(1) != w.t4 || p.AllowsModel(0) != w.g2 {
			t.Errorf("pod %d = %+v, want %+v", i, p, w)
		}
	}
	if tr.Pods[0].Class != tr.Pods[4].Class || tr.Pods[0].Class == tr.Pods[1].Class || tr.Classes != 4 {
		t.Errorf("classes: %d %d %d of %d", tr.Pods[0].Class, tr.Pods[4].Class, tr.Pods[1].Class, tr.Classes)
	}
	if tr.TotalDemand() != 460+1000+460 {
		t.Errorf("demand = %d", tr.TotalDemand())
	}
}

func TestReadTraceWithoutSpecColumn(t *testing.T) {
	c := newCluster(t, "n1,64000,262144,8,G2")
	tr, err := ReadTrace("openb_pod_list_multigpu20.csv",
		strings.NewReader("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1000,8,1000\n"), c)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Name != "multigpu20" || tr.Pods[0].Allowed != nil || tr.Pods[0].Demand() != 8000 {
		t.Errorf("trace = %+v", tr)
	}
}

func TestWriteIssues(t *testing.T) {
	is := &Issues{}
	is.skip("f.csv", 2, "bad %d", 1)
	is.warn("f.csv", 3, "odd")
	is.skip("f.csv", 9, "bad %d", 2)
	var b bytes.Buffer
	if err := WriteIssues(&b, "f.csv", is, 2); err != nil {
		t.Fatal(err)
	}
	want := "f.csv:2: bad 1\nf.csv:3: odd\nf.csv: ... 1 more\nf.csv: 2 rows skipped, 1 rows kept with a warning\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestTraceName(t *testing.T) {
	for in, want := range map[string]string{
		"/x/openb_pod_list_default.csv": "default",
		"gpushare40.csv":                "gpushare40",
		"dir/mine":                      "mine",
	} {
		if got := TraceName(in); got != want {
			t.Errorf("TraceName(%q) = %q, want %q", in, got, want)
		}
	}
}
