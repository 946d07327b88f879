package main

import (
	"fmt"

	"github.com/spf13/cobra"
	kversion "k8s.io/component-base/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/tessera-gpu/tessera/pkg/scheduler"
	"github.com/tessera-gpu/tessera/pkg/version"
)

// newCommand is kube-scheduler's command with Tessera's plugin registered,
// the simulate subcommand, and a --version that names Tessera's version
// beside the Kubernetes version it is built from.
func newCommand() *cobra.Command {
	cmd := app.NewSchedulerCommand(app.WithPlugin(scheduler.Name, scheduler.New))
	cmd.Use = "gpu-scheduler"
	cmd.AddCommand(newSimulateCommand())
	cmd.Long += "\n\nTessera's placement plugin is registered as " + scheduler.Name +
		"; enable it in a profile of the --config file (manifests/scheduler has examples for both modes)." +
		"\n\nSubcommands:\n  simulate   replay GPU-cluster traces under placement policies offline (gpu-scheduler simulate --help)"
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if f := c.Flags().Lookup("version"); f != nil && f.Value.String() == "true" {
			fmt.Fprintf(c.OutOrStdout(), "Tessera gpu-scheduler %s (Kubernetes %s)\n", version.Version, kversion.Get().GitVersion)
			return nil
		}
		return run(c, args)
	}
	return cmd
}
