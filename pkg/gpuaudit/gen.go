package gpuaudit

// The BPF object and its Go bindings are generated from bpf/audit.c and
// committed, so that building needs no clang. `make generate` reruns this
// (clang and llvm-strip from Debian's clang/llvm packages, libbpf's headers
// from libbpf-dev) and records the source's hash in bpf/source.sha256;
// `make verify` checks that hash without clang.
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type event audit bpf/audit.c
