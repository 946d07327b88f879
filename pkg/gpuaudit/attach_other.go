//go:build !(linux && (amd64 || arm64))

package gpuaudit

import (
	"context"
	"errors"
)

type attachError struct {
	reason string
	err    error
}

func (e *attachError) Error() string { return e.err.Error() }
func (e *attachError) Unwrap() error { return e.err }

type probe struct{ hook Hook }

func attach(context.Context, Config) (*probe, error) {
	return nil, &attachError{reason: "no_hook", err: errors.New("the gpu audit runs on Linux amd64 and arm64 only")}
}

func (p *probe) read(func(Open)) error { return nil }
func (p *probe) stopReading()          {}
func (p *probe) lost() uint64          { return 0 }
func (p *probe) close()                {}

type cgroupPaths struct{}

func newCgroupPaths(context.Context, string) *cgroupPaths { return nil }
func cgroup2Dir(context.Context, Config) string           { return "" }
func (c *cgroupPaths) path(uint64) (string, bool)         { return "", false }
func (c *cgroupPaths) close()                             {}
