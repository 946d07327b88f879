package reconcile_test

import (
	"strings"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/mig/reconcile"
)

func TestParseDrainPolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    reconcile.DrainPolicy
		wantErr bool
	}{
		{in: "", want: reconcile.DrainWait},
		{in: "wait", want: reconcile.DrainWait},
		{in: "evict", want: reconcile.DrainEvict},
		{in: "drain", wantErr: true},
		{in: "Evict", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := reconcile.ParseDrainPolicy(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), `"`+tt.in+`"`) || !strings.Contains(err.Error(), "wait or evict") {
					t.Fatalf("ParseDrainPolicy(%q) = %v, %v; want an error naming the value and the allowed ones", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseDrainPolicy(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestNewRequiresWiring(t *testing.T) {
	_, err := reconcile.New(reconcile.Config{Drain: "wait"})
	if err == nil {
		t.Fatal("New with an empty config succeeded")
	}
	for _, field := range []string{"NodeName", "Client", "Recorder", "Machine", "Sharing", "Devices"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("New error %q does not name %s", err, field)
		}
	}
}
