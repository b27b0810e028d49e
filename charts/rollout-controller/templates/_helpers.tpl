{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "rollout-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 57 characters so that suffixes such as "-redis" still fit.
*/}}
{{- define "rollout-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rollout-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "rollout-controller.labels" -}}
helm.sh/chart: {{ include "rollout-controller.chart" . }}
{{ include "rollout-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ include "rollout-controller.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rollout-controller
{{- end }}

{{- define "rollout-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollout-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "rollout-controller.redis.labels" -}}
helm.sh/chart: {{ include "rollout-controller.chart" . }}
{{ include "rollout-controller.redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.redis.bundled.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rollout-controller
{{- end }}

{{- define "rollout-controller.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollout-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "rollout-controller.test.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollout-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{- define "rollout-controller.test.labels" -}}
helm.sh/chart: {{ include "rollout-controller.chart" . }}
{{ include "rollout-controller.test.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rollout-controller
{{- end }}

{{- define "rollout-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rollout-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rollout-controller.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "rollout-controller.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "rollout-controller.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding tokens, signing keys and the Redis URL(s).
*/}}
{{- define "rollout-controller.secretName" -}}
{{- default (include "rollout-controller.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "rollout-controller.redis.fullname" -}}
{{- printf "%s-redis" (include "rollout-controller.fullname" .) }}
{{- end }}

{{- define "rollout-controller.redis.host" -}}
{{- printf "%s.%s.svc.%s" (include "rollout-controller.redis.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "rollout-controller.redis.passwordSecretName" -}}
{{- default (include "rollout-controller.redis.fullname" .) .Values.redis.bundled.auth.existingSecret }}
{{- end }}

{{- define "rollout-controller.redis.passwordSecretKey" -}}
{{- if .Values.redis.bundled.auth.existingSecret }}
{{- .Values.redis.bundled.auth.existingSecretKey }}
{{- else -}}
redis-password
{{- end }}
{{- end }}

{{/*
Where the controller gets its Redis URL: "bundled", "secret" (redis.url, redis.clusterUrls or
existingSecret) or "memory".
*/}}
{{- define "rollout-controller.redisMode" -}}
{{- if .Values.redis.bundled.enabled -}}
bundled
{{- else if or .Values.redis.url .Values.redis.clusterUrls .Values.existingSecret -}}
secret
{{- else -}}
memory
{{- end }}
{{- end }}

{{/*
In "secret" mode, the Secret key (and env var) holding the Redis address: ROLLOUT_REDIS_URL or
ROLLOUT_REDIS_CLUSTER_URLS. Only that one is referenced, so a missing key stops the pod instead of
letting it fall back to the in-memory store.
*/}}
{{- define "rollout-controller.redisSecretKey" -}}
{{- if .Values.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else if .Values.redis.clusterUrls -}}
ROLLOUT_REDIS_CLUSTER_URLS
{{- else -}}
ROLLOUT_REDIS_URL
{{- end }}
{{- end }}

{{/*
Join a list of strings with commas.
*/}}
{{- define "rollout-controller.csv" -}}
{{- join "," . }}
{{- end }}

{{/*
The bare token of the first metrics token (`name:token` → token), for the ServiceMonitor.
*/}}
{{- define "rollout-controller.metricsScrapeToken" -}}
{{- $first := first .Values.secrets.metricsTokens | trim }}
{{- if contains ":" $first }}
{{- regexReplaceAll "^[^:]*:" $first "" }}
{{- else }}
{{- $first }}
{{- end }}
{{- end }}

{{/*
The bare token of the first admin token (`name:token` → token), for the `helm test` pod.
*/}}
{{- define "rollout-controller.doctorToken" -}}
{{- $first := first .Values.secrets.adminTokens | trim }}
{{- if contains ":" $first }}
{{- regexReplaceAll "^[^:]*:" $first "" }}
{{- else }}
{{- $first }}
{{- end }}
{{- end }}

{{/*
Refuse values that would deploy something broken. Included once, by deployment.yaml (every
install renders it), so a bad combination fails the whole render with a clear message.
*/}}
{{- define "rollout-controller.validate" -}}
{{- $v := .Values }}
{{- $chartSecrets := or $v.secrets.adminTokens $v.secrets.readTokens $v.secrets.metricsTokens $v.secrets.alertTokens $v.secrets.cioSigningKeys $v.secrets.notifyUrls $v.redis.url $v.redis.clusterUrls }}
{{- if and $v.existingSecret $chartSecrets }}
{{- fail "existingSecret is set: leave secrets.*, redis.url and redis.clusterUrls empty and put those values in the existing Secret (keys ROLLOUT_ADMIN_TOKENS, ROLLOUT_REDIS_URL or ROLLOUT_REDIS_CLUSTER_URLS, ...)" }}
{{- end }}
{{- if and (not $v.existingSecret) (not $v.secrets.adminTokens) }}
{{- fail "no admin token: set secrets.adminTokens (e.g. --set 'secrets.adminTokens={ann:<a long random secret>}') or existingSecret with a ROLLOUT_ADMIN_TOKENS key. Without one every replica would generate its own." }}
{{- end }}
{{- if and $v.redis.url $v.redis.bundled.enabled }}
{{- fail "redis.url and redis.bundled.enabled are both set: choose one Redis" }}
{{- end }}
{{- if and $v.redis.url $v.redis.clusterUrls }}
{{- fail "redis.url and redis.clusterUrls are both set: choose one Redis, a single node (redis.url) or a Redis Cluster (redis.clusterUrls); the service refuses to start with both" }}
{{- end }}
{{- if and $v.redis.clusterUrls $v.redis.bundled.enabled }}
{{- fail "redis.clusterUrls and redis.bundled.enabled are both set: choose one Redis (the bundled Redis is a single node, not a cluster)" }}
{{- end }}
{{- $drain := int $v.shutdown.drainSeconds }}
{{- $stopping := add (int $v.shutdown.preStopSleepSeconds) $drain (int $v.shutdown.graceSeconds) }}
{{- if le (int $v.terminationGracePeriodSeconds) $stopping }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above shutdown.preStopSleepSeconds + shutdown.drainSeconds + shutdown.graceSeconds (%d): Kubernetes would kill the pod while it still drains or finishes requests" (int $v.terminationGracePeriodSeconds) $stopping) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- if $v.redis.allowInMemory }}
{{- fail "autoscaling.enabled with redis.allowInMemory: the in-memory store is per pod, so scaled-out replicas would disagree" }}
{{- end }}
{{- if not (or $v.autoscaling.targetCPUUtilizationPercentage $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- if and $v.httpRoute.enabled (not $v.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to, e.g. [{name: shared-gateway, namespace: gateway-system}]" }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- $noticed := mul (int $v.probes.readiness.periodSeconds) (int $v.probes.readiness.failureThreshold) }}
{{- if and (eq $v.probes.readiness.path "/readyz") (gt $noticed $drain) }}
{{- fail (printf "the readiness probe notices a draining pod only after periodSeconds x failureThreshold = %d s, longer than shutdown.drainSeconds (%d s): the pod would stop listening while still in the Service. Probe more often or drain longer" $noticed $drain) }}
{{- end }}
{{- if and $v.redis.allowInMemory (gt (int $v.replicaCount) 1) }}
{{- fail (printf "redis.allowInMemory needs replicaCount=1 (got %d): the in-memory store is per pod, so replicas would disagree. Use redis.url, redis.clusterUrls, existingSecret or redis.bundled.enabled=true" (int $v.replicaCount)) }}
{{- end }}
{{- if and (eq (include "rollout-controller.redisMode" .) "memory") (not $v.redis.allowInMemory) }}
{{- fail "no Redis configured: set redis.url, redis.clusterUrls, existingSecret (with ROLLOUT_REDIS_URL, or ROLLOUT_REDIS_CLUSTER_URLS and redis.existingSecretKey=ROLLOUT_REDIS_CLUSTER_URLS) or redis.bundled.enabled=true; for a throw-away single replica set replicaCount=1 and redis.allowInMemory=true" }}
{{- end }}
{{- /* A CA only matters for rediss://; the service ignores it with redis://, so refuse it where
the chart can see that it would be ignored instead of letting TLS look configured. */}}
{{- if $v.redis.caSecret.name }}
{{- if $v.redis.bundled.enabled }}
{{- fail "redis.caSecret.name and redis.bundled.enabled are both set: the bundled Redis speaks plain redis:// (no TLS), so a CA would never be used. Use an external rediss:// Redis (redis.url, redis.clusterUrls or existingSecret) or unset redis.caSecret.name" }}
{{- end }}
{{- if eq (include "rollout-controller.redisMode" .) "memory" }}
{{- fail "redis.caSecret.name is set but no Redis is configured (in-memory store): set redis.url, redis.clusterUrls or existingSecret with a rediss:// address, or unset redis.caSecret.name" }}
{{- end }}
{{- if and $v.redis.url (not (hasPrefix "rediss://" $v.redis.url)) }}
{{- fail "redis.caSecret.name is set but redis.url is not rediss://: the CA is only used for TLS. Use a rediss:// URL or unset redis.caSecret.name" }}
{{- end }}
{{- $tlsSeeds := list }}
{{- range $v.redis.clusterUrls }}
{{- if hasPrefix "rediss://" . }}
{{- $tlsSeeds = append $tlsSeeds . }}
{{- end }}
{{- end }}
{{- if and $v.redis.clusterUrls (not $tlsSeeds) }}
{{- fail "redis.caSecret.name is set but no URL in redis.clusterUrls is rediss://: the CA is only used for TLS. Use rediss:// seed URLs or unset redis.caSecret.name" }}
{{- end }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (kindIs "invalid" $v.podDisruptionBudget.minAvailable) (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable) }}
{{- fail "podDisruptionBudget.enabled needs minAvailable or maxUnavailable" }}
{{- end }}
{{- if and $v.redis.bundled.enabled $v.redis.bundled.auth.enabled $v.redis.bundled.auth.password (not (regexMatch "^[A-Za-z0-9._~-]+$" $v.redis.bundled.auth.password)) }}
{{- fail "redis.bundled.auth.password may only hold URL-safe characters [A-Za-z0-9._~-]" }}
{{- end }}
{{- end }}
