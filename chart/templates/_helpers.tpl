{{/* Labels on every object of the release. */}}
{{- define "phantom.labels" -}}
app.kubernetes.io/part-of: phantom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels of one component's objects: include with (list $ "component"). */}}
{{- define "phantom.componentLabels" -}}
{{ include "phantom.labels" (index . 0) }}
app.kubernetes.io/name: {{ index . 1 }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "component"). */}}
{{- define "phantom.selector" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{- define "phantom.image" -}}
{{ printf "%s/%s:%s" (index . 0).Values.images.registry (index . 1) (index . 0).Values.images.tag }}
{{- end -}}

{{/* The restricted pod security context every Phantom container runs with. */}}
{{- define "phantom.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "phantom.pdbApiVersion" -}}
{{- if .Values.admission.podDisruptionBudget.apiVersion -}}
{{ .Values.admission.podDisruptionBudget.apiVersion }}
{{- else if .Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}
