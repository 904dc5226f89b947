{{/* The chart's name, or nameOverride. */}}
{{- define "vmo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, at most 63 characters (a DNS label); fullnameOverride replaces it. */}}
{{- define "vmo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "vmo.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vmo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vmo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vmo.labels" -}}
{{ include "vmo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vector-migration
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "vmo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vmo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vmo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator may do in a namespace it watches: exact verbs on exact resources.
Each line names the code that needs it.
*/}}
{{- define "vmo.namespacedRules" -}}
# kopf watches the resources and patches its finalizer and bookkeeping annotations
- apiGroups: ["ruvector.dev"]
  resources: ["vectormigrations"]
  verbs: ["get", "list", "watch", "patch"]
# reconciler.write_status: progress while a reconciliation runs
- apiGroups: ["ruvector.dev"]
  resources: ["vectormigrations/status"]
  verbs: ["patch"]
# owner references with blockOwnerDeletion on the Jobs and ConfigMaps the operator creates
- apiGroups: ["ruvector.dev"]
  resources: ["vectormigrations/finalizers"]
  verbs: ["update"]
# one Event per phase change and failure
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# the backup Job (job_backup.py): created once, then read
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
# the backup Job's pod: its termination message carries the archive's size and checksum
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# the plan ConfigMap <name>-plan
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
# the default backup claim <name>-backup, deleted only by ruvector.dev/delete-backup
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "delete"]
# database credentials from spec.database.secretRef: read, never listed; Replicate to another
# server publishes <name>-target (create), and changes only a Secret labelled as its own (patch)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
{{- end -}}

{{/* The operator's defaults for its Jobs, as JSON (vector_migration.api.JobDefaults). */}}
{{- define "vmo.jobDefaults" -}}
{{- $jobs := .Values.jobs -}}
{{- dict "imageRepository" $jobs.imageRepository "imagePullSecrets" $jobs.imagePullSecrets "resources" $jobs.resources "nodeSelector" $jobs.nodeSelector "tolerations" $jobs.tolerations "podAnnotations" $jobs.podAnnotations "podLabels" $jobs.podLabels "storageClassName" $jobs.storageClassName "runAsUser" $jobs.runAsUser | toJson -}}
{{- end -}}
