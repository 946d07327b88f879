// Package backend chooses and opens the GPU backend named by a spec string
// ("auto", "nvml", "none", "sim:<machine>"). It is the single place that knows
// every backend; it must not hold backend logic of its own.
package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpu/nvmlbackend"
	"github.com/tessera-gpu/tessera/pkg/gpu/sim"
)

// Opened is an open backend and, for a simulated machine, the simulation's
// controls (load, injected events and faults).
type Opened struct {
	gpu.Backend
	Sim *sim.Machine
}

// Usage describes the accepted specs, for flag help texts.
func Usage() string {
	return fmt.Sprintf("GPU backend: auto (NVML if libnvidia-ml loads, else none), nvml, none, "+
		"or sim:<machine> where <machine> is a built-in (%s) or a path to a machine-description YAML file",
		strings.Join(sim.BuiltinNames(), ", "))
}

// Open opens the backend named by spec.
func Open(ctx context.Context, spec string) (*Opened, error) {
	logger := klog.FromContext(ctx)
	switch {
	case spec == "nvml":
		b, err := nvmlbackend.System()
		if err != nil {
			return nil, fmt.Errorf("opening gpu backend %q: %w", spec, err)
		}
		return &Opened{Backend: b}, nil
	case spec == "auto" || spec == "":
		b, err := nvmlbackend.System()
		if err == nil {
			return &Opened{Backend: b}, nil
		}
		if !errors.Is(err, gpu.ErrLibraryNotFound) && !errors.Is(err, gpu.ErrDriverNotLoaded) {
			return nil, fmt.Errorf("opening gpu backend %q: %w", "auto", err)
		}
		reason := fmt.Sprintf("NVML is unavailable: %v", err)
		logger.Info("No usable NVIDIA driver; running without GPUs", "reason", reason)
		return &Opened{Backend: gpu.NewNone(reason)}, nil
	case spec == "none":
		return &Opened{Backend: gpu.NewNone("the gpu backend is disabled (--backend=none)")}, nil
	case strings.HasPrefix(spec, "sim:"):
		name := strings.TrimPrefix(spec, "sim:")
		m, err := sim.Open(name)
		if err != nil {
			return nil, fmt.Errorf("opening gpu backend %q: %w", spec, err)
		}
		b, err := nvmlbackend.New(m.NVML(), nvmlbackend.WithName(spec))
		if err != nil {
			return nil, fmt.Errorf("opening gpu backend %q: %w", spec, err)
		}
		return &Opened{Backend: b, Sim: m}, nil
	default:
		return nil, CheckSpec(spec)
	}
}

// CheckSpec reports a spec Open cannot know, naming the accepted ones; it
// does not check that a sim:<machine> exists.
func CheckSpec(spec string) error {
	switch {
	case spec == "", spec == "auto", spec == "nvml", spec == "none", strings.HasPrefix(spec, "sim:") && spec != "sim:":
		return nil
	}
	return fmt.Errorf("unknown gpu backend %q: want auto, nvml, none or sim:<machine> (built-in machines: %s)",
		spec, strings.Join(sim.BuiltinNames(), ", "))
}
