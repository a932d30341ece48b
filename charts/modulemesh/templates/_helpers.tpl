{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "modulemesh.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: the release name, with the chart name unless it already holds it. */}}
{{- define "modulemesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "modulemesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modulemesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modulemesh
{{- end -}}

{{/* Labels selecting the operator pod. */}}
{{- define "modulemesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modulemesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "modulemesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modulemesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; call with (list $image $root). */}}
{{- define "modulemesh.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaced permissions the operator uses, shared by the ClusterRole (every namespace) and
the per-namespace Roles (watchNamespaces). Each rule names what needs it:
- its own resources: kopf lists/watches them and patches metadata (progress annotations where
  it keeps its progress); the reconciler reads gates and patches status;
- the children it renders: server-side apply is patch (plus create when absent), delete prunes
  a module removed from the spec, no update (nothing is PUT); kopf watches them for drift;
- pods: read only, for readiness and unschedulable reasons in status;
- events: the operator posts Events on graphs (core v1, with its own client; events.k8s.io for
  clients of the newer API).
No wildcards, no Secrets.
*/}}
{{- define "modulemesh.namespacedRules" -}}
- apiGroups: ["modulemesh.io"]
  resources: ["modulegraphs", "privacygates"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modulemesh.io"]
  resources: ["modulegraphs/status", "privacygates/status"]
  verbs: ["get", "patch"]
# Children carry an ownerReference to their graph with blockOwnerDeletion; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
- apiGroups: ["modulemesh.io"]
  resources: ["modulegraphs/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# update: a router of a graph with differentially private outputs gets a Role with get, update
# and create on its budget ledger ConfigMap, and RBAC lets the operator grant only what it holds.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# That Role and its RoleBinding (to the router's own ServiceAccount), one each per such graph.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One per router or module Deployment with more than one replica.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* The Service the API server calls the operator's admission webhook through. */}}
{{- define "modulemesh.webhookService" -}}
{{- printf "%s-webhook" (include "modulemesh.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
