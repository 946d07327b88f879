package scheduler

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// Versioned identity of the plugin's arguments in a KubeSchedulerConfiguration
// (profiles[].pluginConfig[].args).
const (
	ArgsAPIVersion = "gpu.tessera.dev/v1alpha1"
	ArgsKind       = "TesseraArgs"
)

// Defaults of Args.
const (
	// DefaultStaleAfter is four missed heartbeats of the gpu-agent's default
	// 30 s heartbeat.
	DefaultStaleAfter = 2 * time.Minute
	// minStaleAfter keeps a node from going stale between two heartbeats of
	// an agent that writes as rarely as it may.
	minStaleAfter = 10 * time.Second
)

// Args are the Tessera plugin's arguments (gpu.tessera.dev/v1alpha1,
// TesseraArgs). Unset fields take their defaults; a field that is set
// replaces only itself (placement.weights.product alone keeps every other
// default weight).
type Args struct {
	metav1.TypeMeta `json:",inline"`
	// StaleAfter is how old a GPUNode's heartbeat may be before Tessera
	// stops trusting it: the node then gets a neutral score and no Tessera
	// Filter verdict, as a node without a GPUNode does. Default 2m, at least 10s.
	StaleAfter metav1.Duration `json:"staleAfter"`
	// Placement configures the placement policy (pkg/scoring.Config): the
	// weights of its terms, product costs, share policy, look-ahead set
	// sizes and the learned target workload.
	Placement scoring.Config `json:"placement"`
}

// DefaultArgs returns the arguments with every default set.
func DefaultArgs() Args {
	return Args{
		TypeMeta:   metav1.TypeMeta{APIVersion: ArgsAPIVersion, Kind: ArgsKind},
		StaleAfter: metav1.Duration{Duration: DefaultStaleAfter},
		Placement:  scoring.DefaultConfig(),
	}
}

// DecodeArgs reads the plugin's arguments as the scheduler passes them (nil,
// or a *runtime.Unknown holding JSON or YAML) over the defaults, strictly: an
// unknown field is an error naming it. The result is validated.
func DecodeArgs(obj runtime.Object) (Args, error) {
	args := DefaultArgs()
	switch o := obj.(type) {
	case nil:
	case *runtime.Unknown:
		if len(o.Raw) > 0 {
			if err := yaml.UnmarshalStrict(o.Raw, &args); err != nil {
				return Args{}, fmt.Errorf("decoding %s args: %w", Name, err)
			}
		}
	default:
		return Args{}, fmt.Errorf("decoding %s args: got %T, want %s %s", Name, obj, ArgsAPIVersion, ArgsKind)
	}
	if errs := args.Validate(); len(errs) > 0 {
		return Args{}, fmt.Errorf("invalid %s args: %w", Name, errs.ToAggregate())
	}
	return args, nil
}

// Validate checks the arguments; errors name the field and the allowed values.
func (a *Args) Validate() field.ErrorList {
	var errs field.ErrorList
	if a.APIVersion != "" && a.APIVersion != ArgsAPIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), a.APIVersion, []string{ArgsAPIVersion}))
	}
	if a.Kind != "" && a.Kind != ArgsKind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), a.Kind, []string{ArgsKind}))
	}
	if a.StaleAfter.Duration < minStaleAfter {
		errs = append(errs, field.Invalid(field.NewPath("staleAfter"), a.StaleAfter.Duration.String(), fmt.Sprintf("must be at least %s (the gpu-agent heartbeats every 30s by default)", minStaleAfter)))
	}
	for _, e := range a.Placement.Validate() {
		e.Field = "placement." + e.Field
		errs = append(errs, e)
	}
	return errs
}
