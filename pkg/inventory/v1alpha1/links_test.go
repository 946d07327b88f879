package v1alpha1

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseLinkCell(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    LinkCell
		wantErr bool
	}{
		{name: "self", in: "X", want: LinkCell{Self: true}},
		{name: "pcie only", in: "SYS", want: LinkCell{PCIe: "SYS"}},
		{name: "nvlink", in: "NV4:PHB", want: LinkCell{NVLinks: 4, PCIe: "PHB"}},
		{name: "nvswitch", in: "NVS18:NODE", want: LinkCell{NVLinks: 18, NVSwitch: true, PCIe: "NODE"}},
		{name: "unknown path", in: "QPI", wantErr: true},
		{name: "zero links", in: "NV0:SYS", wantErr: true},
		{name: "bad prefix", in: "XX4:SYS", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "self with links", in: "NV2:X", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLinkCell(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLinkCell(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got != tt.want {
				t.Errorf("ParseLinkCell(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Errorf("round trip: %q -> %+v -> %q", tt.in, got, s)
			}
		})
	}
}

func TestParseLinks(t *testing.T) {
	tests := []struct {
		name    string
		rows    []string
		n       int
		want    [][]LinkCell
		wantErr bool
	}{
		{name: "two gpus", rows: []string{"X NV4:PHB", "NV4:PHB X"}, n: 2, want: [][]LinkCell{
			{{Self: true}, {NVLinks: 4, PCIe: "PHB"}},
			{{NVLinks: 4, PCIe: "PHB"}, {Self: true}},
		}},
		{name: "empty", n: 0, want: [][]LinkCell{}},
		{name: "row count", rows: []string{"X"}, n: 2, wantErr: true},
		{name: "short row", rows: []string{"X SYS", "X"}, n: 2, wantErr: true},
		{name: "self off the diagonal", rows: []string{"X X", "SYS X"}, n: 2, wantErr: true},
		{name: "no self on the diagonal", rows: []string{"SYS SYS", "SYS X"}, n: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLinks(tt.rows, tt.n)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLinks error = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); !tt.wantErr && diff != "" {
				t.Errorf("ParseLinks (-want +got):\n%s", diff)
			}
		})
	}
}
