{{/* Chart name. */}}
{{- define "opsplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every object: <release>-opsplane, or the release name when it already contains the chart name.
Cut to 47 characters so that the longest name made from it, <fullname>-leader-election, stays within 63
(a Service or label value may not be longer). */}}
{{- define "opsplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Refuses value combinations that would render but not work. Included by the operator Deployment. */}}
{{- define "opsplane.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.externalUrl) (not .Values.redis.existingSecret) (gt (int .Values.operator.replicas) 1) -}}
{{- fail (printf "redis.enabled=false with operator.replicas=%d and no external Redis: each operator pod would keep its own embedded store, so the REST API would answer differently per pod. Set redis.externalUrl or redis.existingSecret, keep redis.enabled=true, or set operator.replicas=1." (int .Values.operator.replicas)) -}}
{{- end -}}
{{- end -}}

{{/* Common labels. */}}
{{- define "opsplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "opsplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opsplane
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "opsplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsplane.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of both binaries. */}}
{{- define "opsplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the Secret holding the API token. */}}
{{- define "opsplane.tokenSecret" -}}
{{- default (printf "%s-token" (include "opsplane.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Name of the Secret holding the node-daemons' report token (role reporter). */}}
{{- define "opsplane.reportTokenSecret" -}}
{{- default (printf "%s-report-token" (include "opsplane.fullname" .)) .Values.auth.existingReportSecret -}}
{{- end -}}

{{/* Name of the Secret holding the node API token (the node-daemons' own API). */}}
{{- define "opsplane.metricsTokenSecret" -}}
{{- default (printf "%s-metrics-token" (include "opsplane.fullname" .)) .Values.auth.existingMetricsSecret -}}
{{- end -}}

{{- define "opsplane.nodeTokenSecret" -}}
{{- default (printf "%s-node-token" (include "opsplane.fullname" .)) .Values.auth.existingNodeSecret -}}
{{- end -}}

{{/* Env var OPSPLANE_REDIS_URL, from the in-chart Redis, an existing Secret or externalUrl. */}}
{{- define "opsplane.redisEnv" -}}
{{- if .Values.redis.enabled }}
- name: OPSPLANE_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "opsplane.fullname" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: OPSPLANE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.externalUrl }}
- name: OPSPLANE_REDIS_URL
  value: {{ .Values.redis.externalUrl | quote }}
{{- end }}
{{- end -}}

{{/* Restricted container security context (non-root, read-only root, no capabilities). */}}
{{- define "opsplane.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
