package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/tessera-gpu/tessera/test/e2e/cluster"
)

func printIntro() {
	fmt.Print(`Tessera demo: a whole GPU cluster on this machine, no GPU needed.
  Real:      etcd, kube-apiserver, gpu-scheduler (kube-scheduler 1.36 + TesseraGPU), one gpu-agent
             process per node, and the kubelet's own device-manager and PodResources code.
  Simulated: the GPUs (each agent talks to a simulated NVML, --backend=sim:<machine>), and the rest
             of the kubelet: no container runs; a pod is Running once its devices are allocated.

`)
}

func printResult(res *cluster.Result, c *cluster.Cluster) {
	section("Placements (devices: what the kubelet's device manager allocated, as the agent reports it)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  POD\tASKS\tNODE\tDEVICES\tWHY")
	for _, p := range res.Pods {
		if p.Node == "" {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Workload.Key(), p.Workload.Demand(), p.Node, devices(p.Devices), p.Why)
	}
	tw.Flush()
	planned := 0
	for _, p := range res.Pods {
		if p.AsPlanned() {
			planned++
		}
	}
	fromPlan, own := 0, 0
	for _, n := range res.Nodes {
		fromPlan, own = fromPlan+n.Preferred["plan"], own+n.Preferred["own"]
	}
	fmt.Printf("  %d of %d placed pods hold the very devices gpu-scheduler planned (gpu.tessera.dev/devices).\n"+
		"  The agents answered the kubelet's preferred allocations %d times with the plan of the pod being admitted\n"+
		"  and %d times with their own choice (tessera_device_plugin_preferred_allocations_total).\n", planned, placed(res), fromPlan, own)

	section("Refused")
	for _, p := range res.Pods {
		if p.Workload.Impossible {
			fmt.Printf("  %s (%s):\n    %s\n", p.Workload.Key(), p.Workload.Demand(), refusal(p.Refusal))
		}
	}

	r := res.Relabel
	section(fmt.Sprintf("MIG layout change on %s: %s -> %s", r.Node, r.From, r.To))
	fmt.Printf("  %s: %s in %.1fs\n", cluster.LabelMIGState, strings.Join(r.States, " -> "), r.Took.Seconds())
	fmt.Printf("  advertised before: %s\n  advertised after:  %s\n", counts(r.Before), counts(r.After))
	for _, p := range res.Pods {
		if p.Workload.AfterRelabel {
			fmt.Printf("  then %s (%s) landed on %s %s\n", p.Workload.Key(), p.Workload.Demand(), p.Node, devices(p.Devices))
		}
	}

	section("GPU usage per node")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, n := range res.Nodes {
		for i, u := range n.Usage {
			name, kind := n.Name, n.Kind
			if i > 0 {
				name, kind = "", ""
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s %d/%d\n", name, kind, u.Resource, bar(u.Used, u.Total), u.Used, u.Total)
		}
	}
	tw.Flush()

	section("Cluster fragmentation (gpu-scheduler's tessera_scheduler_fragmentation_gpus: free GPUs the expected workload cannot use)")
	for _, f := range res.Fragmentation {
		fmt.Printf("  %-26s %5.2f GPUs of %4.1f free\n", f.When, f.FragmentedGPUs, f.FreeGPUs)
	}

	section("Metrics (dcgm-exporter-compatible, from each agent)")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, n := range res.Nodes {
		fmt.Fprintf(tw, "  curl -s %s\t# %s: %d series, %d with pod labels\n", n.MetricsURL, n.Name, n.Series, n.PodSeries)
	}
	fmt.Fprintf(tw, "  curl -sk %s\t# gpu-scheduler\n", res.SchedulerMetricsURL)
	tw.Flush()
	fmt.Printf("  (the URLs answer while the cluster is up: make demo KEEP=1)\n  logs: %s\n", c.Dir)
}

func summary(res *cluster.Result) string {
	refused := 0
	for _, p := range res.Pods {
		if p.Node == "" {
			refused++
		}
	}
	return fmt.Sprintf("%d pods placed on %d nodes, %d refused with a reason, %s switched to %s in %.1fs; scenario %.0fs.",
		placed(res), len(res.Nodes), refused, res.Relabel.Node, res.Relabel.To, res.Relabel.Took.Seconds(), res.Took.Seconds())
}

func placed(res *cluster.Result) int {
	n := 0
	for _, p := range res.Pods {
		if p.Node != "" {
			n++
		}
	}
	return n
}

var (
	nodesAvailable = regexp.MustCompile(`^0/\d+ nodes are available: `)
	schedulerTail  = regexp.MustCompile(`\.? *(no new claims to deallocate|preemption:).*$`)
)

// refusal is the Tessera part of kube-scheduler's PodScheduled message.
func refusal(msg string) string {
	return schedulerTail.ReplaceAllString(nodesAvailable.ReplaceAllString(msg, ""), "")
}

func section(title string) { fmt.Printf("\n%s\n", title) }

func bar(used, total int) string {
	const width = 16
	if total == 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	full := (used*width + total/2) / total
	if used > 0 && full == 0 {
		full = 1
	}
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}

// devices writes a device list compactly: "GPUs 0-3", "GPU 4 MIG 1g.10gb",
// "GPU 0 shares 1,2/4".
func devices(ds []cluster.Device) string {
	if len(ds) == 0 {
		return "-"
	}
	d0 := ds[0]
	switch {
	case d0.MIGProfile != "" || len(ds) == 1:
		var parts []string
		for _, d := range ds {
			parts = append(parts, d.String())
		}
		return strings.Join(parts, ", ")
	case d0.Replicas > 1:
		var units []string
		for _, d := range ds {
			units = append(units, fmt.Sprint(d.Share))
		}
		return fmt.Sprintf("GPU %d share %s/%d", d0.GPU, strings.Join(units, ","), d0.Replicas)
	}
	var idx []int
	for _, d := range ds {
		idx = append(idx, d.GPU)
	}
	return "GPUs " + ranges(idx)
}

func ranges(v []int) string {
	var parts []string
	for i := 0; i < len(v); {
		j := i
		for j+1 < len(v) && v[j+1] == v[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", v[i], v[j]))
		} else {
			parts = append(parts, fmt.Sprint(v[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
