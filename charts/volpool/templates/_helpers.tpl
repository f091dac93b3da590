{{/*
Prefix of every object name: the release name when it already contains "volpool" (so
`helm install volpool …` gives volpool-agent, volpool-controller, exactly the names of deploy/),
else "<release>-volpool". `fullnameOverride` replaces it.
*/}}
{{- define "volpool.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else if contains "volpool" .Release.Name -}}
{{- .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-volpool" .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels Helm's conventions add; the only difference to deploy/ at default values. */}}
{{- define "volpool.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/*
Labels of a component's objects. `app.kubernetes.io/name` stays volpool-agent /
volpool-controller whatever the release is called: the PodMonitor's `job` label, and with it
the alert rules and dashboards, rely on it. Call with (dict "root" $ "name" "volpool-agent").
*/}}
{{- define "volpool.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: volpool
{{ include "volpool.helmLabels" .root }}
{{- end -}}

{{/* Labels of objects that belong to no one component (pools, monitoring). */}}
{{- define "volpool.partOfLabels" -}}
app.kubernetes.io/part-of: volpool
{{ include "volpool.helmLabels" . }}
{{- end -}}

{{/* "repository:tag", the tag defaulting to the chart's appVersion. Call with (dict "root" $ "image" .Values.agent.image). */}}
{{- define "volpool.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Pod spec fields every component may set from its values. Call with (dict "root" $ "component" .Values.agent). */}}
{{- define "volpool.scheduling" -}}
{{- with .component.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}
