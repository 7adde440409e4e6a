{{/* The release's names, labels and the checks every template shares. */}}

{{- define "tunegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tunegate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tunegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tunegate.selector" -}}
app.kubernetes.io/name: {{ include "tunegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tunegate.labels" -}}
helm.sh/chart: {{ include "tunegate.chart" . }}
{{ include "tunegate.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tunegate
{{- end -}}

{{- define "tunegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tunegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tunegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* PostgreSQL when a Secret holds its URL; else SQLite on the release's volume. */}}
{{- define "tunegate.postgres" -}}
{{- if .Values.database.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Refusals: settings that would render but not work. */}}
{{- define "tunegate.checks" -}}
{{- if not (include "tunegate.postgres" .) -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail (printf "replicaCount is %d but database.existingSecret is empty: each replica would keep its own SQLite registry (keys, aliases, usage and budgets would differ between pods). Name a Secret holding a PostgreSQL URL in database.existingSecret, or set replicaCount to 1." (int .Values.replicaCount)) -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling.enabled is true but database.existingSecret is empty: the autoscaler would start replicas that each keep their own SQLite registry. Name a Secret holding a PostgreSQL URL in database.existingSecret, or turn autoscaling off." -}}
{{- end -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdown.drainSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than shutdown.drainSeconds (%d): the pod would be killed before it finishes its in-flight calls and flushes its usage." (int .Values.terminationGracePeriodSeconds) (int .Values.shutdown.drainSeconds)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is larger than autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{/* The environment every tunegate container of the release gets: secrets by reference only. */}}
{{- define "tunegate.env" -}}
{{- if .Values.database.existingSecret }}
env:
  - name: TUNEGATE_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ .Values.database.existingSecret }}
        key: {{ .Values.database.secretKey }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.secrets.existingSecret }}
{{- end }}
{{- end -}}
