{{/* Names: Services and workloads carry the compose service names (one release per namespace). */}}

{{- define "mlops.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: mlops-platform
app.kubernetes.io/version: {{ include "mlops.tag" .root | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "mlops.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* metadata of a namespaced object: dict "root" $ "component" name ["name" objectName] */}}
{{- define "mlops.metadata" -}}
name: {{ .name | default .component }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "mlops.labels" . | nindent 2 }}
{{- end }}

{{- define "mlops.tag" -}}
{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* One of our images: include "mlops.image" (list $ "gateway") */}}
{{- define "mlops.image" -}}
{{- $root := index . 0 -}}
{{ printf "%s%s:%s" $root.Values.image.registry (index $root.Values.image.repositories (index . 1)) (include "mlops.tag" $root) }}
{{- end }}

{{- define "mlops.secretName" -}}
{{ .Values.secrets.existingSecret | default "mlops-secrets" }}
{{- end }}

{{/* An env var from the platform's Secret, the key named like the variable (.env's names). */}}
{{- define "mlops.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "mlops.secretName" .root }}
      key: {{ .key | default .name }}
{{- end }}

{{- define "mlops.dbHost" -}}
{{ if .Values.postgresql.enabled }}postgres{{ else }}{{ required "externalDatabase.host is required when postgresql.enabled is false" .Values.externalDatabase.host }}{{ end }}
{{- end }}

{{- define "mlops.dbPort" -}}
{{ if .Values.postgresql.enabled }}5432{{ else }}{{ .Values.externalDatabase.port }}{{ end }}
{{- end }}

{{/* A database URI: include "mlops.dbUri" (list $ "postgresql" "gateway" "POSTGRES_GATEWAY_PASSWORD" "monitoring") */}}
{{- define "mlops.dbUri" -}}
{{- $root := index . 0 -}}
{{- $sslmode := ternary "disable" $root.Values.externalDatabase.sslmode $root.Values.postgresql.enabled -}}
{{ printf "%s://%s:$(%s)@%s:%s/%s?sslmode=%s" (index . 1) (index . 2) (index . 3) (include "mlops.dbHost" $root) (include "mlops.dbPort" $root) (index . 4) $sslmode }}
{{- end }}

{{- define "mlops.s3Endpoint" -}}
{{ if .Values.s3.seaweedfs.enabled }}http://seaweedfs:9000{{ else }}{{ required "s3.endpoint is required when s3.seaweedfs.enabled is false" .Values.s3.endpoint }}{{ end }}
{{- end }}

{{/*
The pod's IP as an allowed Host: kubelet probes and Prometheus call a pod by its IP, and every
service refuses unknown Host headers (contracts/guard.py). POD_IP must come first: later variables
expand $(POD_IP).
*/}}
{{- define "mlops.podIP" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{- define "mlops.allowedHosts" -}}
- name: EXTRA_ALLOWED_HOSTS
  value: {{ printf "$(POD_IP),%s" .Values.extraAllowedHosts | trimSuffix "," | quote }}
{{- end }}

{{/* Pod Security "restricted": pod level. include "mlops.podSecurity" 1000 */}}
{{- define "mlops.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mlops.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* The Secret's checksum on pods, so that new secrets roll them. */}}
{{- define "mlops.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The registered models (contracts/models.py, copied by `make chart-sync`). */}}
{{- define "mlops.models" -}}
{{ .Files.Get "files/models.yaml" }}
{{- end }}

{{/* /tmp as a size-limited emptyDir (compose: a tmpfs) */}}
{{- define "mlops.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end }}

{{/* The MLflow client environment (compose's x-mlflow-client-env) with the service's own login. */}}
{{- define "mlops.mlflowClientEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: http://mlflow:5000
- name: MLFLOW_DISABLE_TELEMETRY
  value: "true"
- name: MLFLOW_TRACKING_USERNAME
  value: {{ .user }}
{{ include "mlops.secretEnv" (dict "root" .root "name" "MLFLOW_TRACKING_PASSWORD" "key" .key) }}
{{- end }}

{{/* The control token as a file at /run/secrets/control_token (CONTROL_TOKEN_FILE). */}}
{{- define "mlops.controlTokenVolume" -}}
- name: control-token
  secret:
    secretName: {{ include "mlops.secretName" . }}
    defaultMode: 0440
    items:
      - key: CONTROL_TOKEN
        path: control_token
{{- end }}

{{/*
A container's env: dict "root" $ "plain" (name -> value) "secrets" (list of dict name/key) "after"
(name -> value, rendered after the secrets so that $(PASSWORD) expands). Plain names sorted.
*/}}
{{- define "mlops.envBlock" -}}
{{- $root := .root }}
{{- range $name := keys .plain | sortAlpha }}
- name: {{ $name }}
  value: {{ index $.plain $name | toString | quote }}
{{- end }}
{{- range .secrets }}
{{ include "mlops.secretEnv" (dict "root" $root "name" .name "key" .key) }}
{{- end }}
{{- range $name := keys (.after | default dict) | sortAlpha }}
- name: {{ $name }}
  value: {{ index $.after $name | quote }}
{{- end }}
{{- end }}

{{/*
checkov's skips for every workload (annotations of the Deployment, StatefulSet or Job), each with its
reason; `make test` runs checkov on every render with 0 failed checks (tests/static/test_chart.py).
*/}}
{{- define "mlops.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=images are pinned by exact tag (ours by the platform version), as in docker-compose.yml; digests are the registry's
checkov.io/skip2: CKV_K8S_15=IfNotPresent by default so that version-tagged images loaded on nodes run without a registry; image.pullPolicy sets Always
checkov.io/skip3: CKV_K8S_35=the services read their passwords from the environment as in compose (MLflow's client takes MLFLOW_TRACKING_PASSWORD only so); values come from the Secret
checkov.io/skip4: CKV_K8S_40=the images' users own their files by the uid they were built with (app 1000, postgres 999, seaweedfs 1001); runAsNonRoot holds
{{- end }}
