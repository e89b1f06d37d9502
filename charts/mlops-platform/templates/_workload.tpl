{{/*
A long-running service of ours: Deployment, Service, PodDisruptionBudget and (with autoscaling) an
HPA. dict:
  root, component, image (repository key), command (list), replicas, autoscaling (dict or nil),
  ports (list of dict name/port), probePath, probePort (name), startupSeconds, env (YAML string),
  volumeMounts / volumes (YAML strings), resources, grace (seconds), serviceType, tmpSize,
  serviceAccount (bool: its own ServiceAccount with a token, for the orchestrator), annotations (dict),
  recreate (bool: stop the old pod before starting the new one), livenessTcp (bool: liveness by
  TCP connect, for a health endpoint that reports on others too)
*/}}
{{- define "mlops.workload" -}}
{{- $root := .root }}
{{- $c := dict "root" $root "component" .component }}
apiVersion: v1
kind: Service
metadata:
  {{- include "mlops.metadata" $c | nindent 2 }}
spec:
  type: {{ .serviceType | default "ClusterIP" }}
  selector:
    {{- include "mlops.selector" $c | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
    {{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "mlops.metadata" $c | nindent 2 }}
  annotations:
    {{- include "mlops.checkovSkips" $root | nindent 4 }}
    {{- with .annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if not .autoscaling }}
  replicas: {{ .replicas | default 1 }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if .recreate }}
  # One at a time: the old pod stops before the new one starts.
  strategy:
    type: Recreate
  {{- else }}
  # Rolling updates that fail no request: a new pod takes traffic once ready, an old one leaves then.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  {{- end }}
  selector:
    matchLabels:
      {{- include "mlops.selector" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "mlops.labels" $c | nindent 8 }}
    spec:
      {{- if .serviceAccount }}
      serviceAccountName: {{ .component }}
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      terminationGracePeriodSeconds: {{ .grace | default 30 }}
      securityContext:
        {{- include "mlops.podSecurity" 1000 | nindent 8 }}
      {{- include "mlops.pullSecrets" $root | nindent 6 }}
      # Replicas on different nodes where the cluster has them.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "mlops.selector" $c | nindent 14 }}
      containers:
        - name: {{ .component }}
          image: {{ include "mlops.image" (list $root .image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- include "mlops.containerSecurity" . | nindent 12 }}
          {{- with .command }}
          command: {{ toJson . }}
          {{- end }}
          env:
            {{- include "mlops.podIP" . | nindent 12 }}
            {{- .env | nindent 12 }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
            {{- end }}
          # Slow starts (MLflow's migration check, a model's download) count against this only.
          startupProbe:
            httpGet: {path: {{ .probePath }}, port: {{ .probePort }}}
            periodSeconds: 5
            failureThreshold: {{ div (.startupSeconds | default 120) 5 }}
          readinessProbe:
            httpGet: {path: {{ .probePath }}, port: {{ .probePort }}}
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 2
          livenessProbe:
            {{- if .livenessTcp }}
            tcpSocket: {port: {{ .probePort }}}
            {{- else }}
            httpGet: {path: {{ .probePath }}, port: {{ .probePort }}}
            {{- end }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          # The endpoints controller removes the pod from its Service before SIGTERM arrives.
          lifecycle:
            preStop:
              sleep: {seconds: 5}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "mlops.tmpVolume" (.tmpSize | default "256Mi") | nindent 8 }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "mlops.metadata" $c | nindent 2 }}
spec:
  {{- if or .autoscaling (gt (int (.replicas | default 1)) 1) }}
  minAvailable: 1
  {{- else }}
  # A single replica: a voluntary eviction may take it (a PDB of minAvailable 1 would block node drains).
  maxUnavailable: 1
  {{- end }}
  selector:
    matchLabels:
      {{- include "mlops.selector" $c | nindent 6 }}
{{- with .autoscaling }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  {{- include "mlops.metadata" $c | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $c.component }}
  minReplicas: {{ .minReplicas }}
  maxReplicas: {{ .maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}
