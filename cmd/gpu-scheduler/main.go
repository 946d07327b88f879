// Command gpu-scheduler is kube-scheduler built with Tessera's framework
// plugin (pkg/scheduler, registered as TesseraGPU): enable it in a
// KubeSchedulerConfiguration profile, as a second scheduler
// (schedulerName: tessera-gpu-scheduler) or in the default profile
// (manifests/scheduler). Its `simulate` subcommand replays GPU-cluster
// traces offline (package replay).
package main

import (
	"os"

	"k8s.io/component-base/cli"
)

func main() {
	os.Exit(cli.Run(newCommand()))
}
