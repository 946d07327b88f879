#!/usr/bin/env bash
# The files the Helm chart (charts/tessera) takes from the kustomize base and
# manifests/monitoring, so that each has one source: the CRD (crds/), and the
# ConfigMaps, admission policy, alert rules and dashboard that the chart's
# templates read with .Files.Get. Sourced by hack/update-generated.sh (which
# copies) and hack/verify-generated.sh (which compares).
chart_files=(
  "manifests/base/crd/gpu.tessera.dev_gpunodes.yaml charts/tessera/crds/gpu.tessera.dev_gpunodes.yaml"
  "manifests/base/gpu-agent-admission.yaml charts/tessera/files/gpu-agent-admission.yaml"
  "manifests/base/gpu-agent-config.yaml charts/tessera/files/gpu-agent-config.yaml"
  "manifests/base/gpu-agent-mig-config.yaml charts/tessera/files/gpu-agent-mig-config.yaml"
  "manifests/monitoring/tessera-gpu-alerts.yaml charts/tessera/files/tessera-gpu-alerts.yaml"
  "manifests/monitoring/tessera-gpu-dashboard.json charts/tessera/files/tessera-gpu-dashboard.json"
)
