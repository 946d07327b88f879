#!/usr/bin/env bash
# Cuts test/replaysched's excerpt of the openb default trace (every fifth node
# and pod row) from the full traces in TRACES (default ../shared/traces): the
# Alibaba clusterdata cluster-trace-gpu-v2023 csv/ directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRACES="${TRACES:-../shared/traces}"
out=test/replaysched/testdata/openb-default-1in5
go run ./hack/cmd/trace-slice -every 5 -out "$out" \
  -nodes "$TRACES/openb_node_list_gpu_node.csv" -pods "$TRACES/openb_pod_list_default.csv"
