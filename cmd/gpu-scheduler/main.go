// Command gpu-scheduler is kube-scheduler built with Tessera's framework
// plugins. Until the placement plugins land it is the upstream scheduler,
// built from the pinned k8s.io/kubernetes module, so deployments and the
// scheduler configuration can already be wired against it. Its `simulate`
// subcommand replays GPU-cluster traces offline (package replay).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	cmd := app.NewSchedulerCommand()
	cmd.Use = "gpu-scheduler"
	cmd.AddCommand(newSimulateCommand())
	cmd.Long += "\n\nSubcommands:\n  simulate   replay GPU-cluster traces under placement policies offline (gpu-scheduler simulate --help)"
	os.Exit(cli.Run(cmd))
}
