package main

import (
	"testing"
)

func TestGCSettings(t *testing.T) {
	tests := []struct {
		name        string
		gogc        string
		memoryLimit string
		wantPercent int
		wantLimit   int64
		wantErr     bool
	}{
		{name: "defaults", memoryLimit: "0", wantPercent: defaultGCPercent},
		{name: "empty limit", wantPercent: defaultGCPercent},
		{name: "GOGC set leaves the runtime's", gogc: "200", memoryLimit: "0", wantPercent: 0},
		{name: "GOGC=off leaves the runtime's", gogc: "off", memoryLimit: "0", wantPercent: 0},
		{name: "binary suffix", memoryLimit: "48Mi", wantPercent: defaultGCPercent, wantLimit: 48 << 20},
		{name: "decimal suffix", memoryLimit: "64M", wantPercent: defaultGCPercent, wantLimit: 64_000_000},
		{name: "plain bytes", gogc: "100", memoryLimit: "50331648", wantLimit: 48 << 20},
		{name: "not a quantity", memoryLimit: "lots", wantErr: true},
		{name: "negative", memoryLimit: "-1Mi", wantErr: true},
		{name: "fraction of a byte", memoryLimit: "100m", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			percent, limit, err := gcSettings(tt.gogc, tt.memoryLimit)
			if (err != nil) != tt.wantErr {
				t.Fatalf("gcSettings(%q, %q) error = %v, wantErr %v", tt.gogc, tt.memoryLimit, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if percent != tt.wantPercent || limit != tt.wantLimit {
				t.Errorf("gcSettings(%q, %q) = %d, %d; want %d, %d", tt.gogc, tt.memoryLimit, percent, limit, tt.wantPercent, tt.wantLimit)
			}
		})
	}
}
