package main

// The trace-replay step, kept apart from the cluster scenario: it runs the
// offline simulator (gpu-scheduler simulate) on one openb trace when the
// traces are there.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// tracesHint says where the traces come from and how make passes them.
const tracesHint = "the openb traces are in the public Alibaba cluster-trace-gpu-v2023 dataset " +
	"(https://github.com/alibaba/clusterdata, cluster-trace-gpu-v2023/csv); pass their directory with make demo TRACES=dir"

func replay(ctx context.Context, bin, traces, out string) {
	nodes := filepath.Join(traces, "openb_node_list_gpu_node.csv")
	pods := filepath.Join(traces, "openb_pod_list_default.csv")
	section("Placement replay of the openb 'default' trace (offline simulator, seed 42, FGD vs Tessera)")
	for _, f := range []string{nodes, pods} {
		if _, err := os.Stat(f); traces == "" || err != nil {
			fmt.Printf("  skipped: no openb traces in %q; %s\n", traces, tracesHint)
			return
		}
	}
	sim := exec.CommandContext(ctx, filepath.Join(bin, "gpu-scheduler"), "simulate",
		"--nodes", nodes, "--pods", pods, "--policy", "fgd,tessera", "--seeds", "42", "--tune", "1.3", "--out", out)
	b, err := sim.CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Println("  " + l)
	}
	if err != nil {
		fmt.Printf("  gpu-scheduler simulate: %v\n", err)
	}
}
