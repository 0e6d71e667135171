{{- define "hangar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hangar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "hangar.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "hangar.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hangar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hangar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hangar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hangar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hangar.modelsClaim" -}}
{{- default (printf "%s-models" (include "hangar.fullname" .)) .Values.models.pvc.existingClaim -}}
{{- end -}}

{{/* The health service name readiness asks for: explicit, else the first preloaded model. */}}
{{- define "hangar.readinessService" -}}
{{- if .Values.probes.readinessService -}}
{{- .Values.probes.readinessService -}}
{{- else if .Values.preload -}}
{{- first .Values.preload -}}
{{- end -}}
{{- end -}}

{{/*
hangar.toml: the keys the chart owns, derived from the pod spec so the two cannot disagree,
then the user's configToml verbatim. Only strings are rendered here (Helm would print integers
from values.yaml as floats, which the server rejects).
*/}}
{{- define "hangar.configToml" -}}
listen = {{ printf "0.0.0.0:%d" (int .Values.ports.grpc) | quote }}
metrics_listen = {{ printf "0.0.0.0:%d" (int .Values.ports.metrics) | quote }}
model_dir = {{ .Values.models.mountPath | quote }}
preload = [{{ range $i, $m := .Values.preload }}{{ if $i }}, {{ end }}{{ $m | toString | quote }}{{ end }}]
{{ .Values.configToml }}
{{- end -}}
