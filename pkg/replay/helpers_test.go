package replay

import (
	"fmt"
	"strings"
	"testing"
)

const nodeHeader = "sn,cpu_milli,memory_mib,gpu,model\n"
const podHeader = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"

// newCluster builds a cluster from node CSV rows (without the header).
func newCluster(t *testing.T, rows ...string) *Cluster {
	t.Helper()
	c, err := ReadCluster("nodes.csv", strings.NewReader(nodeHeader+strings.Join(rows, "\n")+"\n"))
	if err != nil {
		t.Fatalf("ReadCluster: %v", err)
	}
	return c
}

// newTrace builds a trace from pod CSV rows (without the header) on c.
func newTrace(t *testing.T, c *Cluster, rows ...string) *Trace {
	t.Helper()
	tr, err := ReadTrace("openb_pod_list_test.csv", strings.NewReader(podHeader+strings.Join(rows, "\n")+"\n"), c)
	if err != nil {
		t.Fatalf("ReadTrace: %v", err)
	}
	return tr
}

// podRows returns n pod rows named prefix-%04d with the given shape.
func podRows(prefix string, n int, cpu, mem, k, g int, spec string) []string {
	rows := make([]string, n)
	for i := range rows {
		rows[i] = fmt.Sprintf("%s-%04d,%d,%d,%d,%d,%s", prefix, i, cpu, mem, k, g, spec)
	}
	return rows
}

// nodeState builds a free-capacity state for scoring tests.
func nodeState(cpuFree int64, gpuFree ...int64) *NodeState {
	ns := &NodeState{CPUFree: cpuFree, GPUFree: gpuFree, Version: 1}
	for _, f := range gpuFree {
		ns.GPUFreeTotal += f
		if f == MilliPerGPU {
			ns.FullFree++
		}
	}
	return ns
}

// podOf builds a pod for scoring tests.
func podOf(cpu int64, k int, g int64) *Pod {
	return &Pod{Name: "p", CPU: cpu, K: k, G: g}
}
