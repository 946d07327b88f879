#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: runs the NVML backend's discovery and a
# telemetry snapshot and compares them with nvidia-smi, printing a readable
# comparison (also saved to _output/gpu-smoke.txt). Exits 2 where there is no
# GPU, 1 on a mismatch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-smoke: nvidia-smi not found; this check needs a machine with an NVIDIA GPU and driver" >&2
  exit 2
fi
mkdir -p _output
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
go build -o bin/gpu-smoke ./hack/cmd/gpu-smoke
bin/gpu-smoke "$@" 2>&1 | tee _output/gpu-smoke.txt
