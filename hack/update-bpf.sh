#!/usr/bin/env bash
# Regenerates pkg/gpuaudit's BPF objects and Go bindings from bpf/audit.c
# with bpf2go, and records the hashes of the sources and the outputs in
# pkg/gpuaudit/bpf/generated.sha256 (which hack/verify-bpf.sh checks without
# clang). Needs clang, llvm-strip and libbpf's headers:
#   apt-get install -y clang llvm libbpf-dev
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in clang llvm-strip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "update-bpf: $tool not found; install Debian's clang, llvm and libbpf-dev to regenerate pkg/gpuaudit" >&2
    exit 1
  fi
done
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
  echo "update-bpf: /usr/include/bpf/bpf_helpers.h not found; install Debian's libbpf-dev" >&2
  exit 1
fi
(cd pkg/gpuaudit && go generate .)
(cd pkg/gpuaudit && sha256sum bpf/*.c bpf/*.h audit_*_bpfel.go audit_*_bpfel.o gen.go > bpf/generated.sha256)
