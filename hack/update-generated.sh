#!/usr/bin/env bash
# Regenerates checked-in generated files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
go run ./hack/cmd/gen-machine-docs docs/machines.md
hack/update-bpf.sh
