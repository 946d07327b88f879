#!/usr/bin/env bash
# Fails when go.mod/go.sum are not tidy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! diff=$(go mod tidy -diff 2>&1); then
  echo "go.mod/go.sum are not tidy (run: go mod tidy):" >&2
  echo "$diff" >&2
  exit 1
fi
