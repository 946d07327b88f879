package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tessera-gpu/tessera/pkg/mig"
)

// newLayoutCommand is `gpu-agent layout`: offline tools for MIG layout configs.
func newLayoutCommand(o *options) *cobra.Command {
	layout := &cobra.Command{
		Use:   "layout",
		Short: "Check MIG layout configs (mig-parted format) against a machine",
		Args:  cobra.NoArgs,
	}
	var configFile string
	var names []string
	check := &cobra.Command{
		Use:   "check --config FILE [--name NAME]...",
		Short: "Print, per config and GPU, the plan or the reasons it cannot apply; touches no GPU",
		Long: `Check parses a MIG config file in mig-parted's format (the file of the ConfigMap
the nvidia.com/mig.config node label picks a config from) and plans each named
config, or every config of the file, against the GPUs of the backend: it prints,
per config and GPU, the MIG instances that would be destroyed and created, or
why the config cannot apply (a profile the GPU lacks, too many instances, a
device index that does not exist...). It only reads the GPUs. It exits non-zero
when the file is invalid or any checked config cannot apply, so that CI can
check a ConfigMap against simulated machines before it ships:

  gpu-agent layout check --config config.yaml --backend sim:dgx-h100 --name all-balanced`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLayoutCheck(cmd.Context(), o, configFile, names, cmd.OutOrStdout())
		},
	}
	check.Flags().StringVar(&configFile, "config", "", "MIG config file in mig-parted's format (required)")
	check.Flags().StringArrayVar(&names, "name", nil, "config to check (repeatable); default: every config of the file")
	_ = check.MarkFlagRequired("config")
	layout.AddCommand(check)
	return layout
}

// errLayoutCheck is returned when some checked config cannot apply.
var errLayoutCheck = errors.New("mig layout check failed")

func runLayoutCheck(ctx context.Context, o *options, configFile string, names []string, w io.Writer) error {
	f, err := mig.Load(configFile)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names = f.Names()
	}
	b, m, err := openDiscovered(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	var out strings.Builder
	if len(m.Devices) == 0 {
		fmt.Fprintf(&out, "warning: backend %s shows no gpus (%s); every config that selects no gpu by index applies trivially\n", m.Backend, m.Reason)
	}
	var failed []string
	for _, name := range names {
		p, err := mig.NewPlan(f, name, m)
		if err == nil {
			_ = p.Write(&out)
			continue
		}
		failed = append(failed, name)
		var pe *mig.PlanError
		if !errors.As(err, &pe) {
			fmt.Fprintf(&out, "mig config %q (%s) on %s: %v\n", name, f.Source, m.Backend, err)
			continue
		}
		what := "cannot be applied"
		if pe.Unknown {
			what = "unknown config"
		}
		fmt.Fprintf(&out, "mig config %q (%s) on %s: %s\n", name, f.Source, m.Backend, what)
		for _, l := range pe.Lines() {
			fmt.Fprintf(&out, "  %s\n", l)
		}
	}
	fmt.Fprintf(&out, "checked %d configs on %s: %d apply, %d cannot apply\n", len(names), m.Backend, len(names)-len(failed), len(failed))
	if _, err := io.WriteString(w, out.String()); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %d of %d configs of %s cannot apply on %s: %s",
			errLayoutCheck, len(failed), len(names), f.Source, m.Backend, strings.Join(failed, ", "))
	}
	return nil
}
