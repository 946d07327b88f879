package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin"
	"github.com/tessera-gpu/tessera/pkg/deviceplugin/health"
	"github.com/tessera-gpu/tessera/pkg/gpu"
	"github.com/tessera-gpu/tessera/pkg/gpuaudit"
	"github.com/tessera-gpu/tessera/pkg/inventory"
	"github.com/tessera-gpu/tessera/pkg/kube"
	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
	"github.com/tessera-gpu/tessera/pkg/procmap"
)

// Defaults applied to zero Config fields.
const (
	// DefaultShutdownTimeout bounds the shutdown after SIGTERM: below the
	// 30 s a pod is given by default (terminationGracePeriodSeconds), so that
	// the agent ends on its own before the kubelet kills it.
	DefaultShutdownTimeout = 20 * time.Second
	// DefaultNodeReadTimeout bounds reading the node's device-plugin config
	// label at start, after which the default config serves until the API
	// server answers.
	DefaultNodeReadTimeout = 10 * time.Second
)

// EventComponent is the source component of the agent's Events.
const EventComponent = "tessera-gpu-agent"

// Client is the agent's view of the Kubernetes API; *kube.Client is one.
type Client interface {
	reconcile.Client
	kube.EventWriter
	inventory.NodeClient
	// GetNode reads a Node.
	GetNode(ctx context.Context, name string) (*v1.Node, error)
	// PodListWatch lists and watches the pods bound to a node (the pod
	// directory of per-pod usage and the GPU audit).
	PodListWatch(nodeName string) cache.ListerWatcher
	// ListNodePods lists the pods bound to a node (the scheduler's plans,
	// read when the kubelet asks for a preferred allocation).
	ListNodePods(ctx context.Context, nodeName string) (*v1.PodList, error)
}

var _ Client = (*kube.Client)(nil)

// Config is everything an agent runs with. cmd/gpu-agent fills it from
// flags; tests fill it directly. Backend is required; every other zero
// field takes the default its comment names.
type Config struct {
	// Backend is the GPU backend, opened once per process; the caller closes
	// it after Run returns.
	Backend gpu.Backend
	// Client talks to the Kubernetes API; nil runs standalone: no node
	// labels (the default device-plugin config, MIGConfig at start), no
	// Events, and readiness does not wait for the kubelet.
	Client Client
	// NodeName is the agent's own Node: its labels choose the device-plugin
	// and MIG configs, Events are recorded on it, and telemetry carries it
	// (default the host name). Required with Client.
	NodeName string

	// PluginDir is the kubelet's device-plugin directory (default
	// /var/lib/kubelet/device-plugins/).
	PluginDir string
	// DevicePluginConfigDir holds named device-plugin configs (a mounted
	// ConfigMap) that the node label nvidia.com/device-plugin.config picks.
	DevicePluginConfigDir string
	// DevicePluginConfigDefault names the config used while the node has
	// no such label; "" is the built-in default.
	DevicePluginConfigDefault string
	// SharePolicy says which GPU serves a time-sliced request (default packed).
	SharePolicy deviceplugin.SharePolicy
	// HealthPolicy decides which events make a GPU unhealthy and when it
	// recovers (default health.DefaultPolicy()).
	HealthPolicy health.Policy
	// LostGPUProbeInterval is how often a lost GPU is probed for a reset
	// (default deviceplugin.DefaultProbeInterval).
	LostGPUProbeInterval time.Duration

	// MIGConfigFile is a mig-parted config file whose named layouts the node
	// label nvidia.com/mig.config selects; "" leaves MIG alone.
	MIGConfigFile string
	// StandaloneMIGConfig is the layout of MIGConfigFile applied at start;
	// only without Client (in a cluster the node label chooses).
	StandaloneMIGConfig string
	// MIGJournal records a layout change in progress, so that an agent
	// restarted mid-change rolls it back; "" keeps no journal.
	MIGJournal string
	// MIGDrain says how pods leave GPUs whose layout changes (default wait).
	MIGDrain reconcile.DrainPolicy
	// MIGDrainTimeout and MIGApplyTimeout bound a layout change's waiting
	// for pods and its apply (default 5m each).
	MIGDrainTimeout time.Duration
	MIGApplyTimeout time.Duration
	// MIGDrainPollInterval is how often pod resources are re-read while
	// draining (default 2s).
	MIGDrainPollInterval time.Duration

	// CollectionInterval is the telemetry collection period (default
	// telemetry.DefaultInterval).
	CollectionInterval time.Duration
	// PodResourcesSocket is the kubelet's PodResources socket (default
	// podresources.DefaultSocket); PodResourcesInterval its refresh period.
	PodResourcesSocket   string
	PodResourcesInterval time.Duration

	// MetricsAddress serves /metrics, /healthz and /readyz; "" serves none
	// (Handler still returns them).
	MetricsAddress string
	// DebugAddress serves net/http/pprof under /debug/pprof/; "" (the
	// default) serves none. It is unauthenticated: keep it on localhost.
	DebugAddress string

	// NodeReadTimeout bounds reading the node label at start (default
	// DefaultNodeReadTimeout): an unreachable API server does not stop the
	// agent, which serves the default config and catches up when it returns.
	NodeReadTimeout time.Duration
	// ShutdownTimeout bounds Run's shutdown once its context is done
	// (default DefaultShutdownTimeout); keep it below the pod's
	// terminationGracePeriodSeconds.
	ShutdownTimeout time.Duration

	// Registry is where the agent's metrics are registered and gathered
	// for /metrics; nil makes one with the Go and process collectors.
	Registry *prometheus.Registry
	// Clock drives timers (default the real clock).
	Clock clock.WithTicker

	// GPUNodes writes the node's GPUNode (pkg/inventory); nil publishes no
	// inventory (standalone, or an operator who turned it off). With it the
	// agent keeps its GPUNode and, unless DisableGFDLabels, the Node's
	// GPU Feature Discovery labels equal to what it observes.
	GPUNodes inventory.GPUNodeClient
	// DisableGFDLabels leaves the Node's nvidia.com/gpu.* labels to NVIDIA's
	// GPU Feature Discovery running beside Tessera.
	DisableGFDLabels bool
	// MachineType is nvidia.com/gpu.machine (the DMI product name); "" writes "unknown".
	MachineType string
	// PodUsage exports per-pod GPU usage (tessera_pod_gpu_*) from the GPU
	// processes' cgroups; in a container the agent needs the host's PID
	// namespace (hostPID) to read them. Without Client, processes are
	// attributed to no pod.
	PodUsage bool
	// Cgroups reads a process's /proc/<pid>/cgroup (default procmap.ProcFS
	// on the host's /proc; a simulated machine serves its own processes').
	Cgroups procmap.CgroupReader
	// GPUAudit, when set, runs the eBPF audit of NVIDIA device opens
	// (pkg/gpuaudit): opens by pods of devices the kubelet did not allocate
	// them are counted and recorded as Warning Events. It never stops the
	// agent: without privileges or a usable kernel hook it reports why in
	// tessera_gpu_audit_up and the agent runs on.
	GPUAudit *gpuaudit.Config
	// InventoryHeartbeat is how often an unchanged GPUNode is confirmed
	// (default inventory's 30 s); the scheduler's stale age must exceed it.
	InventoryHeartbeat time.Duration
	// InventoryMinWriteInterval spaces GPUNode writes: changes within it
	// are coalesced into one write (default inventory's 5 s).
	InventoryMinWriteInterval time.Duration
	// IgnoreSchedulerPlans makes the device plugin's preferred allocation
	// the allocator's own choice always. By default, in a cluster, it is the
	// devices gpu-scheduler planned for the pod being admitted
	// (gpu.tessera.dev/devices) when the plan can be told and still fits
	// (pkg/deviceplugin/plans).
	IgnoreSchedulerPlans bool
	// InventoryResyncInterval is how often the inventory is compared with
	// what the agent observes for changes nothing signalled, such as pods
	// coming and going (default inventory's 5 s).
	InventoryResyncInterval time.Duration
}

// Validate reports settings that cannot work, naming the Config field and
// the allowed values. It changes nothing.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.Backend == nil {
		errs = append(errs, field.Required(field.NewPath("Backend"), "a GPU backend is required"))
	}
	if c.Client != nil && c.NodeName == "" {
		errs = append(errs, field.Required(field.NewPath("NodeName"), "the node's name is required with a Kubernetes API client"))
	}
	if c.StandaloneMIGConfig != "" {
		if c.MIGConfigFile == "" {
			errs = append(errs, field.Invalid(field.NewPath("StandaloneMIGConfig"), c.StandaloneMIGConfig, "needs MIGConfigFile"))
		}
		if c.Client != nil {
			errs = append(errs, field.Forbidden(field.NewPath("StandaloneMIGConfig"), fmt.Sprintf(
				"%s is for standalone runs; in a cluster label the node: kubectl label node %s %s=%s --overwrite",
				c.StandaloneMIGConfig, c.NodeName, reconcile.MIGConfigLabel, c.StandaloneMIGConfig)))
		}
	}
	switch c.SharePolicy {
	case "", deviceplugin.SharePacked, deviceplugin.ShareDistributed:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("SharePolicy"), c.SharePolicy,
			[]deviceplugin.SharePolicy{deviceplugin.SharePacked, deviceplugin.ShareDistributed}))
	}
	switch c.MIGDrain {
	case "", reconcile.DrainWait, reconcile.DrainEvict:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("MIGDrain"), c.MIGDrain,
			[]reconcile.DrainPolicy{reconcile.DrainWait, reconcile.DrainEvict}))
	}
	if err := c.HealthPolicy.Validate(); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("HealthPolicy"), c.HealthPolicy.String(), err.Error()))
	}
	for name, d := range map[string]time.Duration{
		"LostGPUProbeInterval": c.LostGPUProbeInterval, "MIGDrainTimeout": c.MIGDrainTimeout,
		"MIGApplyTimeout": c.MIGApplyTimeout, "MIGDrainPollInterval": c.MIGDrainPollInterval,
		"CollectionInterval": c.CollectionInterval, "PodResourcesInterval": c.PodResourcesInterval,
		"NodeReadTimeout": c.NodeReadTimeout, "ShutdownTimeout": c.ShutdownTimeout,
		"InventoryHeartbeat": c.InventoryHeartbeat, "InventoryMinWriteInterval": c.InventoryMinWriteInterval,
		"InventoryResyncInterval": c.InventoryResyncInterval,
	} {
		if d < 0 {
			errs = append(errs, field.Invalid(field.NewPath(name), d.String(), "must be >= 0 (0 takes the default)"))
		}
	}
	return errs
}

// withDefaults returns c with the defaults applied to zero fields.
func (c Config) withDefaults() Config {
	if c.HealthPolicy.IgnoredXIDs == nil && c.HealthPolicy.CriticalXIDs == nil && c.HealthPolicy.RecoveryPeriod == 0 {
		c.HealthPolicy = health.DefaultPolicy()
	}
	if c.SharePolicy == "" {
		c.SharePolicy = deviceplugin.SharePacked
	}
	if c.MIGDrain == "" {
		c.MIGDrain = reconcile.DrainWait
	}
	if c.NodeReadTimeout == 0 {
		c.NodeReadTimeout = DefaultNodeReadTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return c
}
