{{/* The image reference of one binary: <image.repository>/<name>:<tag>; the tag is image.tag or the chart's appVersion, never latest. */}}
{{- define "tessera.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if or (eq $tag "latest") (eq $tag "") -}}
{{- fail (printf "image.tag must be a version such as %s, not %q" .root.Chart.AppVersion $tag) -}}
{{- end -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.repository) .name $tag -}}
{{- end -}}

{{/* Labels of every object; .component is gpu-agent or gpu-scheduler. */}}
{{- define "tessera.labels" -}}
app.kubernetes.io/part-of: tessera
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The service account name the admission policy and RBAC name. */}}
{{- define "tessera.agentServiceAccount" -}}tessera-gpu-agent{{- end -}}
{{- define "tessera.schedulerServiceAccount" -}}tessera-gpu-scheduler{{- end -}}

{{/* data of a ConfigMap in one of the chart's copies of the kustomize base (files/). */}}
{{- define "tessera.baseConfigMapData" -}}
{{- $cm := .root.Files.Get .file | fromYaml -}}
{{- if not $cm.data -}}{{- fail (printf "%s holds no ConfigMap data (run: make generate)" .file) -}}{{- end -}}
{{- toYaml $cm.data -}}
{{- end -}}
