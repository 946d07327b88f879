package xid

import (
	"slices"
	"testing"
)

func TestDescription(t *testing.T) {
	tests := []struct {
		xid  uint64
		want string
	}{
		{xid: FallenOffTheBus, want: "gpu has fallen off the bus"},
		{xid: 48, want: "double bit ecc error"},
		{xid: 4242, want: ""},
	}
	for _, tt := range tests {
		if got := Description(tt.xid); got != tt.want {
			t.Errorf("Description(%d) = %q, want %q", tt.xid, got, tt.want)
		}
	}
}

func TestApplication(t *testing.T) {
	got := Application()
	if want := []uint64{13, 31, 43, 45, 68, 94, 109}; !slices.Equal(got, want) {
		t.Errorf("Application() = %v, want %v", got, want)
	}
	got[0] = 1 // a copy: the catalogue does not change
	if !IsApplication(13) || IsApplication(1) || IsApplication(FallenOffTheBus) || IsApplication(48) {
		t.Error("IsApplication disagrees with Application")
	}
	for _, x := range Application() {
		if Description(x) == "" {
			t.Errorf("application xid %d has no description", x)
		}
	}
}
