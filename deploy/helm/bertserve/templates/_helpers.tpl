{{/* Names and labels shared by every object. */}}
{{- define "bertserve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bertserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bertserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bertserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bertserve.labels" -}}
{{ include "bertserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "bertserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bertserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bertserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}

{{/* The bucket schemes the server mirrors into its cache. */}}
{{- define "bertserve.remote" -}}
{{- if regexMatch "^(s3|gs|gcs|az|abfs)://" .Values.modelRepository.uri -}}true{{- end -}}
{{- end -}}

{{/* tritonserver's flags, from the values. */}}
{{- define "bertserve.args" -}}
- --model-repository
- {{ .Values.modelRepository.uri | quote }}
- --model-cache-dir
- /var/cache/bertserve
- --http-port
- {{ .Values.service.ports.http | quote }}
- --grpc-port
- {{ .Values.service.ports.grpc | quote }}
- --metrics-port
- {{ .Values.service.ports.metrics | quote }}
- --exit-timeout-secs
- {{ .Values.server.exitTimeoutSeconds | quote }}
{{- if gt (int .Values.modelRepository.pollSeconds) 0 }}
- --model-control-mode
- poll
- --repository-poll-secs
- {{ .Values.modelRepository.pollSeconds | quote }}
{{- end }}
{{- range .Values.server.args }}
- {{ . | quote }}
{{- end }}
{{- end -}}
