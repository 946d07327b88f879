#!/usr/bin/env bash
# Starts a local etcd + kube-apiserver in the background (hack/cmd/local-cluster)
# and prints `export KUBECONFIG=...`; use as: eval "$(hack/local-up.sh)".
# Stop it with hack/local-down.sh. State and logs live in _output/local.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=_output/local
pidfile="$dir/local-cluster.pid"
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "local cluster already running (pid $(cat "$pidfile")); run hack/local-down.sh first" >&2
  exit 1
fi

hack/build-k8s-bins.sh
go build -o bin/local-cluster ./hack/cmd/local-cluster
rm -rf "$dir" && mkdir -p "$dir"
nohup bin/local-cluster -dir "$dir" >"$dir/local-cluster.log" 2>&1 &
pid=$!

deadline=$((SECONDS + 90))
until [[ -f $pidfile ]]; do # written once the apiserver is ready
  if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
    echo "local cluster failed to start; see $dir/*.log:" >&2
    tail -n 30 "$dir/local-cluster.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "export KUBECONFIG=$PWD/$dir/kubeconfig"
