// Package config reads the device-plugin configuration file of NVIDIA's
// k8s-device-plugin (api/config/v1: `version: v1`, `flags`, `sharing.timeSlicing`)
// and chooses a node's file from a mounted config directory by the node label
// nvidia.com/device-plugin.config, as NVIDIA's config manager does.
//
// It owns the file format: parsing with defaults, validation that names the
// field and the allowed values (k8s.io/apimachinery field.ErrorList), and the
// resolution of a time-slicing `devices` filter against the devices a node has.
// Unlike NVIDIA's plugin, which ignores `rename` and `devices` with a warning,
// Tessera honours both.
//
// It is pure: it must not talk to the kubelet (no gRPC), to the API server (no
// Kubernetes client) or to hardware (no NVML), and it reads no flags or
// environment variables. The caller passes in file contents, a directory and
// the label value, and gets values or errors back.
package config
