#!/usr/bin/env bash
# Builds a stand-in for an openb multi-GPU trace that is not in ../shared/traces
# (multigpu40, multigpu50): the given trace (multigpu30) with copies of its own
# multi-GPU pods (num_gpu >= 2) appended, cycling through them in trace order,
# until they make SHARE % of the trace's GPU demand (num_gpu x gpu_milli).
# The replay's --tune then scales the whole to 130 % of the cluster, as it does
# the real traces. Usage: hack/multigpu-standin.sh IN.csv SHARE > OUT.csv
set -euo pipefail
in=${1:?usage: $0 IN.csv SHARE}
share=${2:?usage: $0 IN.csv SHARE}
awk -F, -v OFS=, -v share="$share" '
NR == 1 {
	for (i = 1; i <= NF; i++) col[$i] = i
	if (!("num_gpu" in col) || !("gpu_milli" in col) || !("name" in col)) {
		print "'"$in"': no name, num_gpu or gpu_milli column" > "/dev/stderr"; exit 2
	}
	print; next
}
{
	print
	d = $col["num_gpu"] * $col["gpu_milli"]
	total += d
	if ($col["num_gpu"] >= 2) { multi += d; rows[n++] = $0 }
}
END {
	if (n == 0) { print "'"$in"': no multi-GPU pods" > "/dev/stderr"; exit 2 }
	for (k = 0; multi < share / 100 * total; k++) {
		$0 = rows[k % n]
		d = $col["num_gpu"] * $col["gpu_milli"]
		$col["name"] = $col["name"] "-mg" k
		print
		multi += d; total += d
	}
}' "$in"
