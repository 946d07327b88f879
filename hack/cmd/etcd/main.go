// Command etcd is etcd built from the Go module that Kubernetes itself pins, so
// tests and the local control plane use a version kube-apiserver supports without
// needing a system package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
