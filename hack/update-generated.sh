#!/usr/bin/env bash
# Regenerates checked-in generated files. Run through `make generate`, which
# installs the pinned controller-gen and passes it in $CONTROLLER_GEN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
: "${CONTROLLER_GEN:?set CONTROLLER_GEN to the controller-gen binary (run: make generate)}"
go run ./hack/cmd/gen-machine-docs docs/machines.md
# The simulated NVML library's DeviceXxx(device) -> device.Xxx() forwarders.
go run ./hack/cmd/gen-sim-forwarders pkg/gpu/sim/zz_generated.forwarders.go
# GPUNode: deep copies beside the types, the CRD into the kustomize base.
"$CONTROLLER_GEN" object paths=./pkg/inventory/v1alpha1/...
"$CONTROLLER_GEN" crd:crdVersions=v1 paths=./pkg/inventory/v1alpha1/... output:crd:dir=manifests/base/crd
# Golden GFD labels and GPUNode statuses of simulated machines (their test verifies them).
go test ./pkg/inventory/ -run Golden -count=1 -update
hack/update-bpf.sh
# The chart's copies of the CRD and of the base's configs, policy and monitoring assets.
. hack/chart-files.sh
for pair in "${chart_files[@]}"; do
  read -r src dst <<<"$pair"
  mkdir -p "$(dirname "$dst")"
  cp "$src" "$dst"
done
