#!/usr/bin/env bash
# Stops the cluster started by hack/local-up.sh. Its logs stay in _output/local.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pidfile=_output/local/local-cluster.pid
if [[ ! -f $pidfile ]]; then
  echo "no local cluster running ($pidfile not found)" >&2
  exit 0
fi
pid=$(cat "$pidfile")
kill -TERM "$pid" 2>/dev/null || true
timeout 30 tail --pid="$pid" -f /dev/null # local-cluster stops its children first
echo "local cluster stopped" >&2
