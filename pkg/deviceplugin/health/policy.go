package health

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tessera-gpu/tessera/pkg/gpu/xid"
)

// DefaultRecoveryPeriod is how long a GPU must go without a fatal event
// before it is healthy again.
const DefaultRecoveryPeriod = 5 * time.Minute

// defaultIgnoredXIDs are the XIDs an application causes, or that are
// contained to it: the GPU stays usable for the next workload (pkg/gpu/xid
// says why 94, contained ECC errors, is among them unlike in NVIDIA's device
// plugin). Uncontained (95) and double-bit ECC errors and row-remapping
// failures (64) stay fatal, so a memory error that does damage the GPU still
// makes it unhealthy.
var defaultIgnoredXIDs = xid.Application()

// Policy decides which events make a GPU unhealthy and when it recovers.
// Double-bit ECC errors and a lost GPU (GPU_IS_LOST, or XID 79: it fell off
// the bus) are always fatal, whatever the XID lists say; single-bit
// (corrected) ECC errors never are.
type Policy struct {
	// IgnoredXIDs never make a GPU unhealthy; they win over CriticalXIDs.
	IgnoredXIDs map[uint64]bool
	// CriticalXIDs, when not nil, are the only XIDs that make a GPU
	// unhealthy; nil means every XID not ignored does ("critical=all").
	CriticalXIDs map[uint64]bool
	// RecoveryPeriod is how long a GPU made unhealthy by an XID or ECC error
	// must go without another fatal event to be healthy again. Zero means
	// DefaultRecoveryPeriod.
	RecoveryPeriod time.Duration
}

// DefaultPolicy ignores the application-caused XIDs NVIDIA's plugin ignores
// (13, 31, 43, 45, 68, 109) and the contained ECC error (94), treats every
// other XID as fatal, and recovers after DefaultRecoveryPeriod.
func DefaultPolicy() Policy {
	return Policy{
		IgnoredXIDs:    set(defaultIgnoredXIDs),
		RecoveryPeriod: DefaultRecoveryPeriod,
	}
}

func set(xids []uint64) map[uint64]bool {
	m := make(map[uint64]bool, len(xids))
	for _, x := range xids {
		m[x] = true
	}
	return m
}

// IsFatalXID reports whether the XID makes a GPU unhealthy.
func (p Policy) IsFatalXID(xid uint64) bool {
	if p.IgnoredXIDs[xid] {
		return false
	}
	return p.CriticalXIDs == nil || p.CriticalXIDs[xid]
}

// Validate reports a policy that cannot work: a negative recovery period, or
// an XID both ignored and critical.
func (p Policy) Validate() error {
	var errs []error
	if p.RecoveryPeriod < 0 {
		errs = append(errs, fmt.Errorf("recovery period %s: must be > 0", p.RecoveryPeriod))
	}
	for _, x := range sortedXIDs(p.CriticalXIDs) {
		if p.IgnoredXIDs[x] {
			errs = append(errs, fmt.Errorf("xid policy: xid %d is both ignored and critical", x))
		}
	}
	return errors.Join(errs...)
}

// XIDSpec renders the XID part of the policy in the syntax ParsePolicy reads:
// "ignore=13,31,43,45,68,94,109;critical=all".
func (p Policy) XIDSpec() string {
	critical := "all"
	if p.CriticalXIDs != nil {
		critical = joinXIDs(sortedXIDs(p.CriticalXIDs))
	}
	return "ignore=" + joinXIDs(sortedXIDs(p.IgnoredXIDs)) + ";critical=" + critical
}

func (p Policy) String() string {
	period := p.RecoveryPeriod
	if period == 0 {
		period = DefaultRecoveryPeriod
	}
	return p.XIDSpec() + " recoveryPeriod=" + period.String()
}

func sortedXIDs(m map[uint64]bool) []uint64 {
	var out []uint64
	for x, on := range m {
		if on {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

func joinXIDs(xids []uint64) string {
	s := make([]string, len(xids))
	for i, x := range xids {
		s[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(s, ",")
}

// ParsePolicy builds a policy from the strings a command line passes in.
//
// xids is a list of clauses separated by ";":
//
//	ignore=<list>     the XIDs that never make a GPU unhealthy; the list holds XID
//	                  numbers and "default" (the default ignored XIDs), or is empty
//	                  or "none" to ignore nothing
//	critical=<list>   "all" (every XID not ignored is fatal), or the only XIDs that are
//
// A clause left out keeps its default; "" is DefaultPolicy's XIDs. For example
// "ignore=default,63" also ignores XID 63, "critical=48,79,95" considers only
// those. recoveryPeriod is a Go duration ("5m", "90s"); "" is
// DefaultRecoveryPeriod. Errors name the bad value.
func ParsePolicy(xids, recoveryPeriod string) (Policy, error) {
	p := DefaultPolicy()
	seen := map[string]bool{}
	for _, clause := range strings.Split(xids, ";") {
		clause = strings.TrimSpace(clause)
		if clause == "" {
			continue
		}
		key, value, ok := strings.Cut(clause, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok {
			return Policy{}, fmt.Errorf("xid policy %q: clause %q is not key=value (want ignore=<xids> or critical=<all|xids>)", xids, clause)
		}
		if seen[key] {
			return Policy{}, fmt.Errorf("xid policy %q: %s is given more than once", xids, key)
		}
		seen[key] = true
		switch key {
		case "ignore":
			ignored, err := parseXIDList(value, true)
			if err != nil {
				return Policy{}, fmt.Errorf("xid policy %q: ignore: %w", xids, err)
			}
			p.IgnoredXIDs = ignored
		case "critical":
			if value == "all" {
				p.CriticalXIDs = nil
				continue
			}
			critical, err := parseXIDList(value, false)
			if err != nil {
				return Policy{}, fmt.Errorf("xid policy %q: critical: %w", xids, err)
			}
			if len(critical) == 0 {
				return Policy{}, fmt.Errorf("xid policy %q: critical is empty (want all or a list of xids)", xids)
			}
			p.CriticalXIDs = critical
		default:
			return Policy{}, fmt.Errorf("xid policy %q: unknown key %q (want ignore or critical)", xids, key)
		}
	}
	if recoveryPeriod != "" {
		d, err := time.ParseDuration(recoveryPeriod)
		if err != nil {
			return Policy{}, fmt.Errorf("recovery period %q: not a duration like 5m or 90s", recoveryPeriod)
		}
		if d <= 0 {
			return Policy{}, fmt.Errorf("recovery period %q: must be > 0", recoveryPeriod)
		}
		p.RecoveryPeriod = d
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// parseXIDList reads "13,31,default"; keywords says whether "default" and
// "none" are allowed.
func parseXIDList(s string, keywords bool) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	if s == "" || (keywords && s == "none") {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if keywords && item == "default" {
			maps.Copy(out, set(defaultIgnoredXIDs))
			continue
		}
		x, err := strconv.ParseUint(item, 10, 64)
		if err != nil || x == 0 {
			want := "an xid number >= 1"
			if keywords {
				want += ` or "default"`
			}
			return nil, fmt.Errorf("%q is not an xid (want %s)", item, want)
		}
		out[x] = true
	}
	return out, nil
}
