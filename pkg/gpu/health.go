package gpu

import "time"

// HealthState is a physical GPU's health, spelled as the kubelet's
// device-plugin API spells it. The state machine that decides it lives in
// pkg/deviceplugin/health; consumers that only read health (telemetry, the
// node inventory) use these types and need not import it.
type HealthState string

// Health states of a GPU.
const (
	Healthy   HealthState = "Healthy"
	Unhealthy HealthState = "Unhealthy"
)

// HealthStatus is a GPU's health at one moment.
type HealthStatus struct {
	Index  int
	UUID   string
	State  HealthState
	Reason string
	// Since is when the GPU entered State (for the initial Healthy state, when
	// its health was first followed).
	Since time.Time
	// Lost means the GPU stopped answering (it fell off the bus); only a
	// detected reset makes it healthy again.
	Lost bool
}
