#!/usr/bin/env bash
# Fails when pkg/gpuaudit's BPF C source, headers or generated objects and
# bindings differ from what hack/update-bpf.sh last generated (by hash: no
# clang needed; the object a given clang writes is not byte-stable across
# clang versions, so it is not rebuilt here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../pkg/gpuaudit"
if ! sha256sum --quiet -c bpf/generated.sha256; then
  echo "pkg/gpuaudit: the BPF source or its generated files changed without regenerating (run: make generate, which needs clang, llvm and libbpf-dev)" >&2
  exit 1
fi
listed=$(awk '{print $2}' bpf/generated.sha256 | sort)
present=$(ls bpf/*.c bpf/*.h audit_*_bpfel.go audit_*_bpfel.o gen.go | sort)
if [ "$listed" != "$present" ]; then
  echo "pkg/gpuaudit: bpf/generated.sha256 does not list exactly the BPF sources and outputs (run: make generate)" >&2
  diff <(echo "$listed") <(echo "$present") >&2 || true
  exit 1
fi
