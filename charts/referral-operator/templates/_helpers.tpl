{{/*
Names, labels and the operator's RBAC rules, shared by every template.
*/}}

{{- define "referral-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "referral-operator.fullname" -}}
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

{{- define "referral-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "referral-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "referral-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "referral-operator.labels" -}}
helm.sh/chart: {{ include "referral-operator.chart" . }}
{{ include "referral-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: referral-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "referral-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "referral-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "referral-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "referral-operator.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}
{{- if .Values.leaderElection.enabled }}2{{ else }}1{{ end }}
{{- else }}
{{- .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
What the controller does, and nothing more (docs/rbac.md explains each rule):
- ReferralSystems: watched; only their status is written. Holding get and patch on
  referralsystems/status is also what lets the operator create the chain-check Role
  that grants them (the API server refuses to let anyone grant rights they lack).
- Children: server-side applied (create + patch), watched (list + watch), read
  (get) and pruned (delete).
- PersistentVolumeClaims hold data: applied, never listed, never deleted.
- Secrets: read by name only. No list, no watch: nothing caches every Secret.
- Jobs: "check now", "backup now", pre-upgrade backups and restores.
- Pods: listed (by label, never watched) only by a restore, to see that no worker
  pod is left before the data is replaced.
- Events: events.k8s.io, created and patched (series of repeats).
*/}}
{{- define "referral-operator.rules" -}}
- apiGroups: ["referral.dev"]
  resources: ["referralsystems"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["referral.dev"]
  resources: ["referralsystems/status"]
  verbs: ["get", "patch"]
{{- if .Values.rbac.referralRestores }}
- apiGroups: ["referral.dev"]
  resources: ["referralrestores"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["referral.dev"]
  resources: ["referralrestores/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}
- apiGroups: [""]
  resources: ["configmaps", "serviceaccounts", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings", "roles"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules", "servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
