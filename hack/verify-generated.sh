#!/usr/bin/env bash
# Fails when a checked-in generated file differs from what hack/update-generated.sh writes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
: "${CONTROLLER_GEN:?set CONTROLLER_GEN to the controller-gen binary (run: make verify)}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stale=0
check() { # check <checked-in file> <freshly generated file>
  if ! diff -u "$1" "$2"; then
    echo "$1 is stale (run: make generate)" >&2
    stale=1
  fi
}
go run ./hack/cmd/gen-machine-docs "$tmp/machines.md"
check docs/machines.md "$tmp/machines.md"
go run ./hack/cmd/gen-sim-forwarders "$tmp/zz_generated.forwarders.go"
check pkg/gpu/sim/zz_generated.forwarders.go "$tmp/zz_generated.forwarders.go"
"$CONTROLLER_GEN" object paths=./pkg/inventory/v1alpha1/... output:object:dir="$tmp/object"
check pkg/inventory/v1alpha1/zz_generated.deepcopy.go "$tmp/object/zz_generated.deepcopy.go"
"$CONTROLLER_GEN" crd:crdVersions=v1 paths=./pkg/inventory/v1alpha1/... output:crd:dir="$tmp/crd"
for f in "$tmp"/crd/*.yaml; do
  check "manifests/base/crd/$(basename "$f")" "$f"
done
for f in manifests/base/crd/*.yaml; do
  if [[ ! -e "$tmp/crd/$(basename "$f")" ]]; then
    echo "$f is not generated from any type any more (run: make generate and remove it)" >&2
    stale=1
  fi
done
# The chart's copies (hack/chart-files.sh) equal their sources.
. hack/chart-files.sh
for pair in "${chart_files[@]}"; do
  read -r src dst <<<"$pair"
  check "$dst" "$src"
done
for f in charts/tessera/crds/*.yaml; do
  if [[ ! -e "manifests/base/crd/$(basename "$f")" ]]; then
    echo "$f has no source in manifests/base/crd (run: make generate and remove it)" >&2
    stale=1
  fi
done
hack/verify-bpf.sh || stale=1
exit "$stale"
