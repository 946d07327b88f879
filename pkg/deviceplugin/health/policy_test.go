package health

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	tests := []struct {
		xid  uint64
		want bool
	}{
		// Application errors NVIDIA's plugin ignores.
		{13, false}, {31, false}, {43, false}, {45, false}, {68, false}, {109, false},
		// Contained ECC error: the GPU keeps serving.
		{94, false},
		// Hardware and driver faults.
		{48, true}, {62, true}, {63, true}, {64, true}, {74, true}, {79, true}, {92, true}, {95, true}, {119, true}, {120, true},
		// Anything not listed is fatal.
		{999, true},
	}
	for _, tt := range tests {
		if got := p.IsFatalXID(tt.xid); got != tt.want {
			t.Errorf("DefaultPolicy().IsFatalXID(%d) = %v, want %v", tt.xid, got, tt.want)
		}
	}
	if p.RecoveryPeriod != 5*time.Minute {
		t.Errorf("default recovery period = %s, want 5m", p.RecoveryPeriod)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("DefaultPolicy().Validate() = %v", err)
	}
	if got, want := p.String(), "ignore=13,31,43,45,68,94,109;critical=all recoveryPeriod=5m0s"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name, xids, period string
		wantSpec           string
		wantPeriod         time.Duration
		wantErr            string
	}{
		{name: "empty is the default", wantSpec: "ignore=13,31,43,45,68,94,109;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "ignore replaces the defaults", xids: "ignore=13,31,43", period: "90s", wantSpec: "ignore=13,31,43;critical=all", wantPeriod: 90 * time.Second},
		{name: "ignore extends the defaults", xids: "ignore=default,63", wantSpec: "ignore=13,31,43,45,63,68,94,109;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "ignore nothing", xids: "ignore=none", wantSpec: "ignore=;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "ignore empty", xids: "ignore=", wantSpec: "ignore=;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "critical list with spaces", xids: " ignore = 13 ; critical = 48, 79 ", period: "10m", wantSpec: "ignore=13;critical=48,79", wantPeriod: 10 * time.Minute},
		{name: "critical all", xids: "critical=all", wantSpec: "ignore=13,31,43,45,68,94,109;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "round trip", xids: "ignore=13,31,43,45,68,94,109;critical=all", wantSpec: "ignore=13,31,43,45,68,94,109;critical=all", wantPeriod: DefaultRecoveryPeriod},
		{name: "not a number", xids: "ignore=13,abc", wantErr: `xid policy "ignore=13,abc": ignore: "abc" is not an xid (want an xid number >= 1 or "default")`},
		{name: "negative", xids: "critical=-48", wantErr: `critical: "-48" is not an xid (want an xid number >= 1)`},
		{name: "zero", xids: "ignore=0", wantErr: `"0" is not an xid`},
		{name: "unknown key", xids: "ignor=13", wantErr: `xid policy "ignor=13": unknown key "ignor" (want ignore or critical)`},
		{name: "not key=value", xids: "13,31", wantErr: `clause "13,31" is not key=value`},
		{name: "key twice", xids: "ignore=13;ignore=31", wantErr: `ignore is given more than once`},
		{name: "critical empty", xids: "critical=", wantErr: `critical is empty (want all or a list of xids)`},
		{name: "ignored and critical", xids: "critical=13,48", wantErr: `xid 13 is both ignored and critical`},
		{name: "bad duration", period: "5 minutes", wantErr: `recovery period "5 minutes": not a duration like 5m or 90s`},
		{name: "zero duration", period: "0s", wantErr: `recovery period "0s": must be > 0`},
		{name: "negative duration", period: "-1m", wantErr: `recovery period "-1m": must be > 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy(tt.xids, tt.period)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePolicy(%q, %q) error = %v, want %q", tt.xids, tt.period, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy(%q, %q): %v", tt.xids, tt.period, err)
			}
			if got := p.XIDSpec(); got != tt.wantSpec {
				t.Errorf("XIDSpec() = %q, want %q", got, tt.wantSpec)
			}
			if p.RecoveryPeriod != tt.wantPeriod {
				t.Errorf("RecoveryPeriod = %s, want %s", p.RecoveryPeriod, tt.wantPeriod)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		p       Policy
		wantErr string
	}{
		{name: "zero policy", p: Policy{}},
		{name: "negative period", p: Policy{RecoveryPeriod: -time.Second}, wantErr: "recovery period -1s: must be > 0"},
		{name: "conflict", p: Policy{IgnoredXIDs: map[uint64]bool{48: true}, CriticalXIDs: map[uint64]bool{48: true}}, wantErr: "xid 48 is both ignored and critical"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
