// Command kube-apiserver is the upstream kube-apiserver command, built from the
// k8s.io/kubernetes module pinned in go.mod, for tests and the local control plane.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
