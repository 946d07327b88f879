//go:build !linux

package procmap

import "errors"

var errNoSuchProcess = errors.New("no such process")
