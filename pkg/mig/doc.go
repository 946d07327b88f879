// Package mig owns MIG layouts: it parses mig-parted's config format (the
// file a nvidia.com/mig.config label names a config of), validates and plans
// a named config against a machine's GPUs with no hardware access, and applies
// a plan through a narrow backend interface, per GPU, with rollback and a
// journal so that an interrupted apply is rolled back at the next start.
//
// It must not watch Kubernetes objects, talk to the kubelet or read flags:
// pkg/mig/reconcile drives it from the Node label, and cmd/gpu-agent wires it.
package mig
