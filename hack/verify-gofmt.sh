#!/usr/bin/env bash
# Fails when a Go file is not gofmt-formatted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=$(gofmt -l $(git ls-files --cached --others --exclude-standard '*.go'))
if [ -n "$bad" ]; then
  echo "gofmt would change these files (run: gofmt -w <files>):" >&2
  echo "$bad" >&2
  exit 1
fi
