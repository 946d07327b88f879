#!/usr/bin/env bash
# make bench-scheduler's harness on scheduler_perf's 10-node workload (label
# integration-test; about a minute), run by make test: both profiles run, the
# GPUNodes are published, and it fails unless Tessera planned every GPU pod.
# scheduler_perf's integration-test mode cannot register an out-of-tree
# plugin, so this runs the benchmark itself, once. The harness logs every
# API call; the log goes to _output/schedperf-smoke.log, and its tail to the
# terminal when the run fails.
set -uo pipefail
bin=${1:?usage: hack/schedperf-smoke.sh BIN_DIR (etcd and kube-apiserver)}
go=${GO:-go}
cd "$(dirname "$0")/.."
mkdir -p _output
log=_output/schedperf-smoke.log
if PATH="$(cd "$bin" && pwd):$PATH" "$go" test -run '^$' -bench BenchmarkPerfScheduling -benchtime 1x -count 1 ./test/schedperf \
	-perf-scheduling-label-filter=integration-test >"$log" 2>&1; then
	grep -E '^(ok|PASS)|Tessera/default' "$log"
	echo "scheduler_perf smoke run (10 nodes, both profiles): passed; log in $log"
else
	tail -n 60 "$log"
	echo "scheduler_perf smoke run (10 nodes, both profiles): FAILED; full log in $log" >&2
	exit 1
fi
