// Package version holds the version stamped into Tessera's binaries at build
// time. It must not hold anything else.
package version

// Version is set with -ldflags "-X github.com/tessera-gpu/tessera/pkg/version.Version=...".
var Version = "v0.0.0-dev"
