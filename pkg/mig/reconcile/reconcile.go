package reconcile

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// Node labels, compatible with NVIDIA's mig-manager and device plugin.
const (
	// MIGConfigLabel names the wanted MIG layout (a config of the mig-parted file).
	MIGConfigLabel = "nvidia.com/mig.config"
	// MIGStateLabel reports the MIG layout change: pending, success or failed.
	MIGStateLabel = "nvidia.com/mig.config.state"
	// SharingConfigLabel names the device-plugin (sharing) config.
	SharingConfigLabel = "nvidia.com/device-plugin.config"
	// SharingStateLabel reports the sharing config change: pending, success or failed.
	SharingStateLabel = "nvidia.com/device-plugin.config.state"
)

// Values of the state labels.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailed  = "failed"
)

// Event reasons recorded on the Node.
const (
	// ReasonMIGRecovered reports an interrupted change rolled back at start.
	ReasonMIGRecovered = "MIGConfigRecovered"
	ReasonMIGPending   = "MIGConfigPending"
	ReasonMIGApplied   = "MIGConfigApplied"
	ReasonMIGFailed    = "MIGConfigFailed"
	// ReasonMIGSuperseded reports a change dropped, before it touched any
	// GPU, for a newer value of the label.
	ReasonMIGSuperseded = "MIGConfigSuperseded"
	// ReasonMIGEvicting is recorded for each pod evicted to free a GPU.
	ReasonMIGEvicting = "MIGConfigEvicting"
)

// DrainPolicy says how GPUs that a layout change touches are freed of pods.
type DrainPolicy string

const (
	// DrainWait waits until no running pod holds an affected GPU (the default).
	DrainWait DrainPolicy = "wait"
	// DrainEvict evicts the pods that hold affected GPUs through the Eviction
	// API, honouring PodDisruptionBudgets, then waits for them to go.
	DrainEvict DrainPolicy = "evict"
)

// ParseDrainPolicy parses a --mig-drain-policy value.
func ParseDrainPolicy(s string) (DrainPolicy, error) {
	switch p := DrainPolicy(s); p {
	case DrainWait, DrainEvict:
		return p, nil
	case "":
		return DrainWait, nil
	}
	return "", fmt.Errorf("invalid drain policy %q: want %s or %s", s, DrainWait, DrainEvict)
}

// Plan is a MIG layout change planned by pkg/mig.
type Plan interface {
	// AffectedUUIDs lists the GPUs (by GPU UUID) the change touches; GPUs
	// already in the wanted layout are not among them.
	AffectedUUIDs() []string
}

// Layouts plans and applies MIG layouts (pkg/mig).
type Layouts interface {
	// Plan checks the named config against the machine and plans the change;
	// it touches no GPU. An unknown name, an unreadable config or a layout
	// that does not fit is an error.
	Plan(ctx context.Context, name string, machine *gpu.Machine) (Plan, error)
	// Apply carries out a plan; on error each GPU it touched is back in its
	// previous layout. It returns the machine as it is afterwards.
	Apply(ctx context.Context, plan Plan) (*gpu.Machine, error)
	// Recover finishes or rolls back an apply a previous process left
	// unfinished, so that no GPU is left with half a layout, and describes
	// what it did ("" when there was nothing to do).
	Recover(ctx context.Context) (string, error)
}

// PodResources tells which pods hold which device IDs (pkg/podresources).
type PodResources interface {
	Refresh(ctx context.Context) error
	// Holders lists the containers holding a device ID or its "ID::n" replicas.
	Holders(deviceID string) []podresources.Holder
}

// SharingConfigurator applies device-plugin configs by label value
// (deviceplugin.Configurator).
type SharingConfigurator interface {
	Apply(ctx context.Context, label string) (string, error)
	SetMachine(ctx context.Context, machine *gpu.Machine) (string, error)
	Applied() string
}

// Advertiser is the device plugin's view of what it advertises
// (deviceplugin.Manager).
type Advertiser interface {
	Resources() []deviceplugin.Resource
	Withhold(uuids []string)
}

// HealthTracker follows the GPUs and MIG devices health is kept for
// (health.Tracker).
type HealthTracker interface {
	SetGPUs(gpus []health.GPU)
}

// NodeClient reads and labels the agent's own Node.
type NodeClient interface {
	// NodeListWatch lists and watches the one Node called name.
	NodeListWatch(name string) cache.ListerWatcher
	// PatchNode patches a Node and returns it as stored.
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*v1.Node, error)
}

// Client is the reconciler's view of the Kubernetes API (*kube.Client).
type Client interface {
	NodeClient
	// EvictPod evicts a pod through the Eviction API, without retrying a
	// refusal (429) itself.
	EvictPod(ctx context.Context, namespace, name string) error
}

var _ Client = (*kube.Client)(nil)

// Config wires a Reconciler.
type Config struct {
	// NodeName is the agent's own Node.
	NodeName string
	Client   Client
	// NodeInformer, when set, is the informer on the agent's Node that the
	// reconciler watches its Node through (kube.NewNodeInformer, shared with
	// the inventory publisher); its owner runs it. Nil: the reconciler runs
	// its own on Client.NodeListWatch.
	NodeInformer cache.SharedIndexInformer
	// Recorder records the reconciler's Node and pod Events; the agent's one
	// recorder, shared with the other parts that record.
	Recorder EventRecorder
	// Machine is the machine as discovered at start.
	Machine *gpu.Machine
	// Discoverer rediscovers the machine after a recovery or a failed apply.
	Discoverer gpu.Discoverer
	// Layouts plans and applies MIG layouts; nil leaves the MIG labels
	// alone (only sharing configs are followed).
	Layouts Layouts
	// Pods answers who holds which device; required for MIG layout changes.
	Pods PodResources

	Sharing SharingConfigurator
	Devices Advertiser
	Health  HealthTracker
	// SharingDir is the device-plugin config directory; a change in it
	// re-applies the sharing config. Empty watches nothing.
	SharingDir string

	// Drain is how pods are moved off GPUs that change (default wait).
	Drain DrainPolicy
	// DrainTimeout bounds waiting for pods to leave affected GPUs (default 5m).
	DrainTimeout time.Duration
	// ApplyTimeout bounds applying a layout (default 5m).
	ApplyTimeout time.Duration
	// PollInterval is how often pod resources are re-read while draining
	// (default 2s).
	PollInterval time.Duration
	// Clock measures durations (default the real clock).
	Clock clock.PassiveClock
	// Metrics counts outcomes; nil counts nothing.
	Metrics *Metrics
	// OnMachine, if set, is called with the machine after every layout change,
	// for other consumers (telemetry, inventory).
	OnMachine func(*gpu.Machine)
}

func (c *Config) defaults() error {
	var missing []string
	if c.NodeName == "" {
		missing = append(missing, "NodeName")
	}
	if c.Client == nil {
		missing = append(missing, "Client")
	}
	if c.Recorder == nil {
		missing = append(missing, "Recorder")
	}
	if c.Machine == nil {
		missing = append(missing, "Machine")
	}
	if c.Sharing == nil {
		missing = append(missing, "Sharing")
	}
	if c.Devices == nil {
		missing = append(missing, "Devices")
	}
	if c.Layouts != nil && (c.Pods == nil || c.Discoverer == nil) {
		missing = append(missing, "Pods and Discoverer (needed with Layouts)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("layout reconciler config: missing %v", missing)
	}
	d, err := ParseDrainPolicy(string(c.Drain))
	if err != nil {
		return fmt.Errorf("layout reconciler config: %w", err)
	}
	c.Drain = d
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Minute
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = 5 * time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 2 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return nil
}

// Reconciler follows the node's layout labels and switches layouts.
type Reconciler struct {
	cfg Config

	// Owned by Run's goroutine.
	machine   *gpu.Machine
	recovered bool
	// recovery describes what Recover did, reported as an Event by Run.
	recovery string
}

// New returns a reconciler; Run starts it.
func New(cfg Config) (*Reconciler, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Reconciler{cfg: cfg, machine: cfg.Machine}, nil
}

// Machine returns the machine as of the last layout change. It is meant for
// callers before Run or after it returned.
func (r *Reconciler) Machine() *gpu.Machine { return r.machine }

// Recover finishes or rolls back a MIG layout change a previous agent left
// unfinished, then re-advertises the machine if its layout differs from the
// one the reconciler was given. Run calls it first if it has not been called;
// the agent may call it before it starts advertising.
func (r *Reconciler) Recover(ctx context.Context) error {
	r.recovered = true
	if r.cfg.Layouts == nil {
		return nil
	}
	did, err := r.cfg.Layouts.Recover(ctx)
	if err != nil {
		return fmt.Errorf("recovering an interrupted mig layout change: %w", err)
	}
	if did != "" {
		klog.FromContext(ctx).Info("Recovered an interrupted MIG layout change", "recovery", did)
		r.recovery = did
	}
	m, err := r.cfg.Discoverer.Discover(ctx)
	if err != nil {
		return fmt.Errorf("discovering gpus after recovery: %w", err)
	}
	if !sameLayout(r.machine, m) {
		if _, err := r.advertise(ctx, m); err != nil {
			return err
		}
	}
	return nil
}
