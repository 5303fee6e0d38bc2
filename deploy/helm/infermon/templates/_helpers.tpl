{{/*
Names. fullname is "<release>-infermon" unless the release name already contains "infermon".
*/}}
{{- define "infermon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infermon.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "infermon.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "infermon.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* A component's resource name: <fullname>-<component>, at most 63 characters. */}}
{{- define "infermon.componentName" -}}
{{- printf "%s-%s" (include "infermon.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infermon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "infermon.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: infermon
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "infermon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infermon.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
An image reference from {repository, tag}. Tags are required and `latest` is refused: every
image is pinned (docs/kubernetes.md). No registry host is assumed; put one in `repository`.
*/}}
{{- define "infermon.image" -}}
{{- $tag := toString (required (printf "%s: image.tag is required (images are pinned by tag)" .what) .image.tag) }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s: image tag 'latest' is not allowed; pin a version" .what) }}
{{- end }}
{{- printf "%s:%s" (required (printf "%s: image.repository is required" .what) .image.repository) $tag }}
{{- end }}

{{/* The infermon image (gpu-agent, relay): the chart's appVersion unless a tag is set. */}}
{{- define "infermon.infermonImage" -}}
{{- $img := dict "repository" .Values.infermonImage.repository "tag" (default .Chart.AppVersion .Values.infermonImage.tag) }}
{{- include "infermon.image" (dict "image" $img "what" "infermonImage") }}
{{- end }}

{{/* Pod-level security context: the chart's defaults merged under a component's own. */}}
{{- define "infermon.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podSecurityContext) (default dict .values.podSecurityContext)) }}
{{- end }}

{{/* Container-level security context: non-root, read-only root FS, nothing escalates. */}}
{{- define "infermon.containerSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.containerSecurityContext) (default dict .values.containerSecurityContext)) }}
{{- end }}

{{/* imagePullSecrets, if any. */}}
{{- define "infermon.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling fields shared by every pod spec: nodeSelector, affinity, tolerations,
priorityClassName, topologySpreadConstraints.
*/}}
{{- define "infermon.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* env entries from a map (sorted by name, so renders are stable), values quoted. */}}
{{- define "infermon.envFromMap" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}

{{/* OTLP endpoint of the collector agent on this pod's node (Service with
internalTrafficPolicy: Local), or the override. */}}
{{- define "infermon.otlpEndpoint" -}}
{{- if .Values.otlpEndpoint }}
{{- .Values.otlpEndpoint }}
{{- else if .Values.collector.agent.enabled }}
{{- printf "http://%s.%s.svc:4317" (include "infermon.componentName" (dict "root" . "component" "collector-agent")) .Release.Namespace }}
{{- else if .Values.collector.gateway.enabled }}
{{- printf "http://%s.%s.svc:4317" (include "infermon.componentName" (dict "root" . "component" "collector-gateway")) .Release.Namespace }}
{{- else }}
{{- fail "otlpEndpoint: set it when neither collector.agent nor collector.gateway is enabled" }}
{{- end }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES for infermon programs: the node's name as host.name (so GPU series
name their machine, not the pod), k8s attributes, then resourceAttributes from values.
*/}}
{{- define "infermon.resourceAttributesEnv" -}}
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attrs := list "host.name=$(K8S_NODE_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" }}
{{- range $k, $v := .Values.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}

{{/* The trace store's OTLP/gRPC host:port: the chart's Jaeger unless traceStore.otlpAddress is set. */}}
{{- define "infermon.traceStoreAddress" -}}
{{- if .Values.traceStore.otlpAddress }}
{{- .Values.traceStore.otlpAddress }}
{{- else if .Values.jaeger.enabled }}
{{- printf "%s.%s.svc:4317" (include "infermon.componentName" (dict "root" . "component" "jaeger")) .Release.Namespace }}
{{- else }}
{{- fail "traceStore.otlpAddress: set it (host:port of an OTLP/gRPC trace store) when jaeger.enabled is false" }}
{{- end }}
{{- end }}

{{/* The metrics store's host:port (Prometheus with its OTLP receiver). */}}
{{- define "infermon.metricsStoreAddress" -}}
{{- required "metricsStore.address: set host:port of a Prometheus with the OTLP receiver enabled (e.g. prometheus-operated.monitoring.svc:9090); see docs/kubernetes.md" .Values.metricsStore.address }}
{{- end }}

{{/* GOMEMLIMIT a little above the memory_limiter's limit, so the GC works hard before the
limiter refuses data, and both act before the container's memory limit. */}}
{{- define "infermon.goMemLimit" -}}
{{- printf "%dMiB" (div (mul (int .) 9) 8) }}
{{- end }}

{{/* Environment of the gateway collector: the variables otel-collector/gateway.yaml reads
(its header lists them). A YAML map, merged with collector.gateway.env. */}}
{{- define "infermon.collectorGatewayEnv" -}}
{{- $v := .Values.collector.gateway }}
{{- $t := $v.tailSampling }}
INFERMON_BIND_HOST: 0.0.0.0
# Each pod's name: which gateway kept a trace (resource attribute infermon.collector.id).
INFERMON_COLLECTOR_ID: $(K8S_POD_NAME)
INFERMON_PROMETHEUS_ADDR: {{ include "infermon.metricsStoreAddress" . | quote }}
INFERMON_JAEGER_OTLP_ADDR: {{ include "infermon.traceStoreAddress" . | quote }}
INFERMON_OTELCOL_MEMORY_LIMIT_MIB: {{ $v.memoryLimitMiB | quote }}
INFERMON_OTELCOL_MEMORY_SPIKE_MIB: {{ div (int $v.memoryLimitMiB) 4 | quote }}
GOMEMLIMIT: {{ include "infermon.goMemLimit" $v.memoryLimitMiB | quote }}
INFERMON_TAIL_DECISION_WAIT: {{ $t.decisionWait | quote }}
INFERMON_TAIL_DECISION_WAIT_AFTER_ROOT: {{ $t.decisionWaitAfterRoot | quote }}
INFERMON_TAIL_NUM_TRACES: {{ $t.numTraces | quote }}
INFERMON_TAIL_SAMPLE_PERCENT: {{ $t.samplePercent | quote }}
INFERMON_TAIL_SLOW_MS_DEFAULT: {{ $t.slowMsDefault | quote }}
{{- with $t.slowModelA }}
INFERMON_TAIL_SLOW_MODEL_A: {{ .model | quote }}
INFERMON_TAIL_SLOW_MS_A: {{ .ms | quote }}
{{- end }}
{{- with $t.slowModelB }}
INFERMON_TAIL_SLOW_MODEL_B: {{ .model | quote }}
INFERMON_TAIL_SLOW_MS_B: {{ .ms | quote }}
{{- end }}
{{- end }}

{{/* Environment of the agent collector: the variables otel-collector/agent.yaml reads (its
header lists them). A YAML map, merged with collector.agent.env. */}}
{{- define "infermon.collectorAgentEnv" -}}
{{- $v := .Values.collector.agent }}
INFERMON_BIND_HOST: 0.0.0.0
{{- if .Values.collector.gateway.enabled }}
# The gateways' headless Service: resolves to every ready gateway pod, so a gateway failing
# its readiness probe stops receiving traces within one re-resolve interval.
INFERMON_GATEWAY_RESOLVER: dns
INFERMON_GATEWAY_DNS_NAME: {{ printf "%s-headless.%s.svc.%s" (include "infermon.componentName" (dict "root" . "component" "collector-gateway")) .Release.Namespace .Values.clusterDomain | quote }}
INFERMON_GATEWAY_DNS_PORT: "4317"
INFERMON_GATEWAY_DNS_INTERVAL: {{ $v.gatewayDnsInterval | quote }}
{{- else }}
INFERMON_GATEWAY_RESOLVER: static
INFERMON_GATEWAY_ENDPOINTS: {{ printf "[%s]" (join "," (required "collector.agent.gatewayEndpoints: list the gateways' OTLP/gRPC host:port when collector.gateway.enabled is false" $v.gatewayEndpoints)) | quote }}
{{- end }}
{{- if $v.hostMetrics }}
INFERMON_HOST_ROOT: /hostfs
{{- end }}
{{- with $v.vllmTarget }}
INFERMON_VLLM_TARGET: {{ . | quote }}
{{- end }}
INFERMON_OTELCOL_MEMORY_LIMIT_MIB: {{ $v.memoryLimitMiB | quote }}
INFERMON_OTELCOL_MEMORY_SPIKE_MIB: {{ div (int $v.memoryLimitMiB) 4 | quote }}
GOMEMLIMIT: {{ include "infermon.goMemLimit" $v.memoryLimitMiB | quote }}
# host.name = the node (not the pod), read by resource_detection's env detector.
OTEL_RESOURCE_ATTRIBUTES: "host.name=$(K8S_NODE_NAME),k8s.node.name=$(K8S_NODE_NAME)"
{{- end }}

{{/* A map as "k1=v1,k2=v2" (sorted by key). */}}
{{- define "infermon.kvList" -}}
{{- $out := list }}
{{- range $k, $v := . }}
{{- $out = append $out (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- join "," $out }}
{{- end }}
