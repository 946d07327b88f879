#!/usr/bin/env bash
# Builds bin/etcd and bin/kube-apiserver from hack/cmd/ for pkg/k8stest and
# hack/local-up.sh. Re-running is cheap: the go build cache does the skipping.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION="${K8S_VERSION:-v1.36.5}"
major="${K8S_VERSION#v}"; major="${major%%.*}"
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version

mkdir -p bin
go build -o bin/etcd ./hack/cmd/etcd
go build -o bin/kube-apiserver \
  -ldflags "-X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}" \
  ./hack/cmd/kube-apiserver
