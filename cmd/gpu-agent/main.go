// Command gpu-agent is Tessera's per-node DaemonSet. This composition root
// parses flags, opens one GPU backend and wires packages together; it holds no
// logic of its own.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/backend"
	"github.com/tessera-gpu/tessera/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-agent:", err)
		os.Exit(1)
	}
}

type options struct {
	backend string
	output  string
	gpmWait time.Duration
}

func newRootCommand() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:           "gpu-agent",
		Short:         "Tessera's GPU node agent: discovers GPUs and watches their health",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), o)
		},
	}
	root.PersistentFlags().StringVar(&o.backend, "backend", "auto", backend.Usage())
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlagSet(klogFlags)

	discover := &cobra.Command{
		Use:   "discover",
		Short: "Print the GPUs, MIG devices and topology the backend sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDiscover(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	discover.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")

	sample := &cobra.Command{
		Use:   "sample",
		Short: "Print one telemetry snapshot as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSample(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	sample.Flags().DurationVar(&o.gpmWait, "gpm-interval", time.Second,
		"time between the two passes that GPM profiling rates need (0 takes one pass and omits them)")
	root.AddCommand(discover, sample)
	return root
}

func open(ctx context.Context, o *options) (*backend.Opened, error) {
	if o.output != "" && o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("invalid --output %q: want table or json", o.output)
	}
	return backend.Open(ctx, o.backend)
}

func runDiscover(ctx context.Context, o *options, w io.Writer) error {
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	m, err := b.Discover(ctx)
	if err != nil {
		return fmt.Errorf("discovering gpus: %w", err)
	}
	if o.output == "json" {
		return writeJSON(w, m)
	}
	return gpu.WriteMachineTable(w, m)
}

func runSample(ctx context.Context, o *options, w io.Writer) error {
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	snap, err := b.Sample(ctx)
	if err == nil && o.gpmWait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.gpmWait):
		}
		snap, err = b.Sample(ctx)
	}
	if err != nil {
		return fmt.Errorf("sampling gpu telemetry: %w", err)
	}
	return writeJSON(w, snapshotView(snap))
}

// snapshotView renders per-device errors as text for JSON output.
func snapshotView(s *gpu.Snapshot) any {
	type dev struct {
		gpu.DeviceTelemetry
		Error string `json:"error,omitempty"`
	}
	out := struct {
		Time    time.Time
		Devices []dev
	}{Time: s.Time}
	for _, d := range s.Devices {
		v := dev{DeviceTelemetry: d}
		if d.Err != nil {
			v.Error = d.Err.Error()
		}
		out.Devices = append(out.Devices, v)
	}
	return out
}

func runAgent(ctx context.Context, o *options) error {
	logger := klog.FromContext(ctx)
	b, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer closeBackend(ctx, b)
	m, err := b.Discover(ctx)
	if err != nil {
		return fmt.Errorf("discovering gpus: %w", err)
	}
	if len(m.Devices) == 0 {
		logger.Info("Advertising no GPUs", "backend", m.Backend, "reason", noGPUReason(m))
	}
	for _, d := range m.Devices {
		logger.Info("Found GPU", "gpu", d.Index, "uuid", d.UUID, "product", d.Product, "memoryMiB", d.MemoryMiB,
			"migEnabled", d.MIGEnabled, "migDevices", len(d.MIGDevices))
	}
	for _, f := range m.Failed {
		logger.Error(f.Err, "GPU cannot be read", "gpu", f.Index, "uuid", f.UUID)
	}
	err = b.WatchEvents(ctx, func(e gpu.Event) {
		logger.Info("GPU event", "kind", e.Kind.String(), "gpu", e.Index, "uuid", e.UUID, "xid", e.XID,
			"gpuInstance", e.GPUInstanceID, "computeInstance", e.ComputeInstanceID)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("watching gpu events: %w", err)
	}
	logger.Info("Shutting down")
	return nil
}

func noGPUReason(m *gpu.Machine) string {
	if m.Reason != "" {
		return m.Reason
	}
	if len(m.Failed) > 0 {
		return "every GPU failed to read"
	}
	return "the driver reports no GPUs"
}

func closeBackend(ctx context.Context, b gpu.Backend) {
	if err := b.Close(); err != nil {
		klog.FromContext(ctx).Error(err, "Closing gpu backend")
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
