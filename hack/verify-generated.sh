#!/usr/bin/env bash
# Fails when a checked-in generated file differs from what hack/update-generated.sh writes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run ./hack/cmd/gen-machine-docs "$tmp/machines.md"
if ! diff -u docs/machines.md "$tmp/machines.md"; then
  echo "docs/machines.md is stale (run: make generate)" >&2
  exit 1
fi
hack/verify-bpf.sh
