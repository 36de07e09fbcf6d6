{{/* The chart's name (nameOverride replaces it). */}}
{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: fullnameOverride, else <release> or <release>-<name>, at most 63 characters. */}}
{{- define "conveyor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selector labels: immutable keys only. */}}
{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "conveyor.labels" -}}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: conveyor
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given (the tag is then ignored), else repository:tag. */}}
{{- define "conveyor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The default artifact store and its credentials, the bundled MinIO's when enabled. */}}
{{- define "conveyor.store" -}}
{{- if .Values.operator.store }}{{ .Values.operator.store }}
{{- else if .Values.minio.enabled }}{{ printf "s3://%s/conveyor" .Values.minio.bucket }}
{{- end }}
{{- end }}

{{- define "conveyor.s3Endpoint" -}}
{{- if .Values.operator.s3Endpoint }}{{ .Values.operator.s3Endpoint }}
{{- else if .Values.minio.enabled }}{{ printf "http://%s-minio.%s.svc:9000" (include "conveyor.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "conveyor.credentialsSecret" -}}
{{- if .Values.operator.credentialsSecret }}{{ .Values.operator.credentialsSecret }}
{{- else if .Values.minio.enabled }}{{ printf "%s-minio-readwrite" (include "conveyor.fullname" .) }}
{{- end }}
{{- end }}

{{- define "conveyor.readOnlyCredentialsSecret" -}}
{{- if .Values.operator.readOnlyCredentialsSecret }}{{ .Values.operator.readOnlyCredentialsSecret }}
{{- else if .Values.minio.enabled }}{{ printf "%s-minio-readonly" (include "conveyor.fullname" .) }}
{{- end }}
{{- end }}

{{/* Security contexts (values.yaml): the operator's default meets the restricted Pod Security
profile and OpenShift's restricted SCC (no fixed UID: the image's numeric USER, or the UID OpenShift
assigns); the bundled MinIO's sets a UID, as its image would otherwise run as root. */}}
{{- define "conveyor.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "conveyor.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{- define "conveyor.minio.podSecurityContext" -}}
{{- toYaml .Values.minio.podSecurityContext }}
{{- end }}

{{- define "conveyor.minio.securityContext" -}}
{{- toYaml .Values.minio.securityContext }}
{{- end }}

{{/* RBAC rules: what the operator does, and nothing more (its tests run it as this ServiceAccount on a real API server). */}}
{{- define "conveyor.namespacedRules" }}
{{- /* Only runs are written (scheduled and retraining runs, cancel, history); the rest is read. */}}
- apiGroups: [conveyor.dev]
  resources: [pipelines, modeldeployments]
  verbs: [get, list, watch]
- apiGroups: [conveyor.dev]
  resources: [pipelineruns]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [conveyor.dev]
  resources: [pipelines/status, pipelineruns/status, modeldeployments/status]
  verbs: [patch]
{{- /* Children carry blockOwnerDeletion (foreground deletion waits for them); the
OwnerReferencesPermissionEnforcement admission plugin then requires update on the owner's finalizers. */}}
- apiGroups: [conveyor.dev]
  resources: [pipelines/finalizers, pipelineruns/finalizers, modeldeployments/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- /* A Secret named for pods is mounted only if it opted in (label conveyor.dev/credentials: "true"):
the operator reads that label, as metadata only (PartialObjectMetadata). RBAC has no metadata-only
verb; `get` without list/watch cannot enumerate Secrets, and reaches none that creating a Job or
Deployment mounting it would not. */}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, prometheusrules]
  verbs: [create, patch]
{{- end }}
{{- define "conveyor.clusterRules" }}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
