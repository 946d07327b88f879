package scheduler

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

func TestDecodeArgs(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		yaml    bool
		check   func(t *testing.T, a Args)
		wantErr []string
	}{
		{name: "nil keeps every default", check: func(t *testing.T, a Args) {
			if a.StaleAfter.Duration != DefaultStaleAfter || a.Placement.Weights != scoring.DefaultConfig().Weights {
				t.Errorf("defaults: %+v", a)
			}
		}},
		{name: "one weight keeps the other defaults", raw: `{"apiVersion":"gpu.tessera.dev/v1alpha1","kind":"TesseraArgs","staleAfter":"45s","placement":{"weights":{"product":3}}}`,
			check: func(t *testing.T, a Args) {
				w := a.Placement.Weights
				if a.StaleAfter.Duration != 45*time.Second || w.Product != 3 || w.Interconnect != scoring.DefaultConfig().Weights.Interconnect || w.Packing != scoring.DefaultConfig().Weights.Packing {
					t.Errorf("got %+v", a)
				}
			}},
		{name: "yaml", yaml: true, raw: "staleAfter: 1m\nplacement:\n  sharePolicy: distributed\n", check: func(t *testing.T, a Args) {
			if a.StaleAfter.Duration != time.Minute || a.Placement.SharePolicy != "distributed" {
				t.Errorf("got %+v", a)
			}
		}},
		{name: "unknown field", raw: `{"staleAfterr":"1m"}`, wantErr: []string{`unknown field "staleAfterr"`}},
		{name: "bad values name the fields and allowed values", raw: `{"kind":"Other","staleAfter":"1s","placement":{"sharePolicy":"random","weights":{"keep":-1},"targetDecay":2}}`,
			wantErr: []string{
				`kind: Unsupported value: "Other": supported values: "TesseraArgs"`,
				`staleAfter: Invalid value: "1s": must be at least 10s`,
				`placement.weights.keep: Invalid value: -1: must be a non-negative finite number`,
				`placement.sharePolicy: Unsupported value: "random": supported values: "packed", "distributed"`,
				`placement.targetDecay: Invalid value: 2: must be in (0, 1]`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var obj runtime.Object
			if tt.raw != "" {
				u := &runtime.Unknown{Raw: []byte(tt.raw), ContentType: runtime.ContentTypeJSON}
				if tt.yaml {
					u.ContentType = runtime.ContentTypeYAML
				}
				obj = u
			}
			a, err := DecodeArgs(obj)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("DecodeArgs = %+v, want an error", a)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("DecodeArgs error = %v\nwant it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeArgs: %v", err)
			}
			tt.check(t, a)
		})
	}
}
