{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "nfs-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, used for every namespaced object. Truncated at 63
characters because some name fields are DNS labels.
*/}}
{{- define "nfs-provisioner.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The fullname the incumbent chart (nfs-subdir-external-provisioner) computes
for the same release and values. Only used for the default provisioner name,
so that `helm upgrade` of an incumbent release onto this chart keeps the name
its StorageClass and PersistentVolumes carry.
*/}}
{{- define "nfs-provisioner.incumbentFullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "nfs-subdir-external-provisioner" .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "nfs-provisioner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name StorageClasses put in `provisioner`: storageClass.provisionerName, else
the incumbent's default cluster.local/<incumbent fullname>.
*/}}
{{- define "nfs-provisioner.provisionerName" -}}
{{- if .Values.storageClass.provisionerName -}}
{{- .Values.storageClass.provisionerName -}}
{{- else -}}
{{- printf "cluster.local/%s" (include "nfs-provisioner.incumbentFullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The leader-election Lease: the provisioner name with "/" replaced by "-" (the
binary derives it the same way, see docs/design.md).
*/}}
{{- define "nfs-provisioner.leaseName" -}}
{{- include "nfs-provisioner.provisionerName" . | replace "/" "-" -}}
{{- end -}}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is
immutable).
*/}}
{{- define "nfs-provisioner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nfs-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object, plus the user's `labels`.
*/}}
{{- define "nfs-provisioner.labels" -}}
helm.sh/chart: {{ include "nfs-provisioner.chart" . }}
{{ include "nfs-provisioner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: provisioner
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels of the pods: the selector labels plus the user's `labels`.
*/}}
{{- define "nfs-provisioner.podLabels" -}}
{{ include "nfs-provisioner.selectorLabels" . }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "nfs-provisioner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nfs-provisioner.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Container image: image.tag, else "v" + appVersion.
*/}}
{{- define "nfs-provisioner.image" -}}
{{- $tag := .Values.image.tag | default (printf "v%s" (trimPrefix "v" .Chart.AppVersion)) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/*
Name of the PersistentVolume / PersistentVolumeClaim that carry the export
when nfs.mountOptions is set (an inline nfs volume has no mount options).
*/}}
{{- define "nfs-provisioner.rootClaimName" -}}
{{- printf "%s-root" (include "nfs-provisioner.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "nfs-provisioner.rootVolumeName" -}}
{{- printf "%s-%s-root" .Release.Namespace (include "nfs-provisioner.fullname" .) -}}
{{- end -}}

{{/*
The same for an item of `exports` with mountOptions. Takes a dict: root (the
chart's top-level context), name (the export's name). Not truncated: claim
and PV names are DNS subdomains (253 characters), and a cut could make two
exports' names equal.
*/}}
{{- define "nfs-provisioner.exportClaimName" -}}
{{- printf "%s-export-%s" (include "nfs-provisioner.fullname" .root) .name -}}
{{- end -}}
{{- define "nfs-provisioner.exportVolumeName" -}}
{{- printf "%s-%s-export-%s" .root.Release.Namespace (include "nfs-provisioner.fullname" .root) .name -}}
{{- end -}}

{{/*
NFS_EXPORTS: the items of `exports` as the binary's --export entries,
name=<name>,server=<server>,path=<path>,dir=/exports/<name>, joined by ";".
*/}}
{{- define "nfs-provisioner.nfsExports" -}}
{{- $entries := list -}}
{{- range .Values.exports -}}
{{- $entries = append $entries (printf "name=%s,server=%s,path=%s,dir=/exports/%s" .name (toString .server) (toString .path) .name) -}}
{{- end -}}
{{- join ";" $entries -}}
{{- end -}}

{{/*
The mount options of each export, by name, as JSON: "default" (the export of
nfs.server) has nfs.mountOptions, an item of `exports` its own mountOptions.
*/}}
{{- define "nfs-provisioner.exportMountOptions" -}}
{{- $out := dict -}}
{{- if .Values.nfs.server -}}
{{- $_ := set $out "default" (.Values.nfs.mountOptions | default list) -}}
{{- end -}}
{{- range .Values.exports -}}
{{- $_ := set $out (toString .name) (.mountOptions | default list) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
"true" when a value is given: not null/absent and not the empty string
(false and 0 are given). Empty otherwise, so it works in `if`.
*/}}
{{- define "nfs-provisioner.isSet" -}}
{{- if and (not (kindIs "invalid" .)) (ne (toString .) "") -}}true{{- end -}}
{{- end -}}

{{/*
A boolean given as true/false or "true"/"false", as the string "true" or
"false". Anything else is left to values.schema.json to reject.
*/}}
{{- define "nfs-provisioner.boolString" -}}
{{- if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else -}}
{{- . | toString | lower -}}
{{- end -}}
{{- end -}}

{{/*
One StorageClass. Takes a dict:
  root:    the chart's top-level context
  class:   the class's values (storageClass, or an item of extraStorageClasses)
  primary: true for storageClass, which keeps the incumbent's rendering
           exactly: archiveOnDelete is always present and mountOptions come
           from nfs.mountOptions. StorageClass parameters, provisioner,
           reclaimPolicy and volumeBindingMode are immutable, so an upgrade
           from the incumbent only works if they come out the same.
*/}}
{{- define "nfs-provisioner.storageClass" -}}
{{- $root := .root -}}
{{- $c := .class -}}
{{- $annotations := dict -}}
{{- if $c.defaultClass -}}
{{- $_ := set $annotations "storageclass.kubernetes.io/is-default-class" "true" -}}
{{- end -}}
{{- with $c.annotations -}}
{{- $annotations = merge (deepCopy .) $annotations -}}
{{- end -}}
{{- $mountOptions := $root.Values.nfs.mountOptions -}}
{{- if not (kindIs "invalid" $c.mountOptions) -}}
{{- $mountOptions = $c.mountOptions -}}
{{- else if $c.exports -}}
{{- /*
A class on exports of its own takes their mount options, as the class of
nfs.server takes nfs.mountOptions: its volumes are mounted from those exports.
*/ -}}
{{- $byExport := include "nfs-provisioner.exportMountOptions" $root | fromJson -}}
{{- $first := "" -}}
{{- range $i, $e := $c.exports -}}
{{- $o := get $byExport (toString $e) | default list | toJson -}}
{{- if eq $i 0 -}}
{{- $first = $o -}}
{{- else if ne $o $first -}}
{{- fail (printf "StorageClass %q spreads over exports with different mountOptions (%s has %s, %s has %s): set mountOptions on the class, which its volumes are mounted with" $c.name (toString (index $c.exports 0)) $first (toString $e) $o) -}}
{{- end -}}
{{- end -}}
{{- $mountOptions = $first | fromJsonArray -}}
{{- end -}}
{{- $expand := true -}}
{{- if kindIs "bool" $c.allowVolumeExpansion -}}
{{- $expand = $c.allowVolumeExpansion -}}
{{- end -}}
{{- $archive := $c.archiveOnDelete -}}
{{- if and .primary (not (include "nfs-provisioner.isSet" $archive)) -}}
{{- $archive = true -}}
{{- end -}}
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {{ $c.name }}
  labels:
    {{- include "nfs-provisioner.labels" $root | nindent 4 }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
provisioner: {{ include "nfs-provisioner.provisionerName" $root }}
allowVolumeExpansion: {{ $expand }}
reclaimPolicy: {{ $c.reclaimPolicy | default "Delete" }}
volumeBindingMode: {{ $c.volumeBindingMode | default "Immediate" }}
parameters:
  {{- if include "nfs-provisioner.isSet" $archive }}
  archiveOnDelete: {{ include "nfs-provisioner.boolString" $archive | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.onDelete }}
  onDelete: {{ $c.onDelete | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.pathPattern }}
  pathPattern: {{ $c.pathPattern | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.mode }}
  mode: {{ $c.mode | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.uid }}
  uid: {{ $c.uid | int64 | toString | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.gid }}
  gid: {{ $c.gid | int64 | toString | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.allowSharedPath }}
  allowSharedPath: {{ include "nfs-provisioner.boolString" $c.allowSharedPath | quote }}
  {{- end }}
  {{- with $c.exports }}
  export: {{ join "," . | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.capacityCheck }}
  capacityCheck: {{ include "nfs-provisioner.boolString" $c.capacityCheck | quote }}
  {{- end }}
  {{- if include "nfs-provisioner.isSet" $c.overcommitRatio }}
  {{- $ratio := $c.overcommitRatio | toString }}
  {{- if and (kindIs "float64" $c.overcommitRatio) (contains "e" $ratio) }}
  {{- /* a YAML number Go would print with an exponent (1e+06): as a decimal */}}
  {{- $ratio = regexReplaceAll "\\.?0+$" (printf "%f" $c.overcommitRatio) "" }}
  {{- end }}
  overcommitRatio: {{ $ratio | quote }}
  {{- end }}
{{- with $mountOptions }}
mountOptions:
  {{- range . }}
  - {{ . | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Checks that values.schema.json cannot express (relations between values).
Included by the Deployment, so every render runs them.
*/}}
{{- define "nfs-provisioner.validate" -}}
{{- $repo := .Values.image.repository | toString -}}
{{- if or (eq $repo "nfs-subdir-external-provisioner") (hasSuffix "/nfs-subdir-external-provisioner" $repo) -}}
{{- fail (printf "image.repository is %q, the incumbent's image, which does not understand this chart's settings (probes, metrics port, Lease RBAC). Remove image.repository and image.tag from your values to use this chart's image." $repo) -}}
{{- end -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "leaderElection.enabled=false with replicaCount=%d: replicas would provision the same claims at once. Set replicaCount to 1 or enable leader election." (int .Values.replicaCount)) -}}
{{- end -}}
{{- /*
The exports: nfs.server's, named "default", and the items of `exports`.
*/ -}}
{{- $exports := .Values.exports | default list -}}
{{- $served := dict -}}
{{- if .Values.nfs.server -}}
{{- $_ := set $served "default" true -}}
{{- else if not $exports -}}
{{- fail "nfs.server is not set and exports is empty: set nfs.server (and nfs.path) for one export, or list the exports in exports" -}}
{{- else if .Values.nfs.mountOptions -}}
{{- fail "nfs.mountOptions is set but nfs.server is not: nfs.mountOptions belong to the export of nfs.server; give each item of exports its own mountOptions" -}}
{{- end -}}
{{- range $i, $e := $exports -}}
{{- $name := toString $e.name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" $name) -}}
{{- fail (printf "exports[%d].name %q is not a lowercase DNS label (a-z, 0-9 and '-', at most 63 characters, starting and ending with a letter or digit)" $i $name) -}}
{{- end -}}
{{- if hasKey $served $name -}}
{{- if and (eq $name "default") $.Values.nfs.server -}}
{{- fail (printf "exports[%d] is named \"default\", the name of the export nfs.server and nfs.path declare: rename it, or leave nfs.server unset" $i) -}}
{{- end -}}
{{- fail (printf "exports[%d].name %q is used twice (export names must all differ)" $i $name) -}}
{{- end -}}
{{- if and $.Values.nfs.server (eq $name (toString $.Values.nfs.volumeName)) -}}
{{- fail (printf "exports[%d].name %q is nfs.volumeName, the pod volume of the export of nfs.server; an export's pod volume takes the export's name: rename one of them" $i $name) -}}
{{- end -}}
{{- $server := $e.server | default "" | toString -}}
{{- $path := $e.path | default "" | toString -}}
{{- if not $server -}}
{{- fail (printf "exports[%d] (%s) has no server" $i $name) -}}
{{- end -}}
{{- if not (hasPrefix "/" $path) -}}
{{- fail (printf "exports[%d] (%s): path %q is not an absolute path" $i $name $path) -}}
{{- end -}}
{{- if or (regexMatch "[,;\\s]" $server) (regexMatch "[,;]" $path) -}}
{{- fail (printf "exports[%d] (%s): server %q or path %q holds a ',', ';' or (server) a space, which NFS_EXPORTS cannot carry" $i $name $server $path) -}}
{{- end -}}
{{- $_ := set $served $name true -}}
{{- end -}}
{{- $names := dict -}}
{{- $defaults := list -}}
{{- $classes := list -}}
{{- if .Values.storageClass.create -}}
{{- $classes = append $classes .Values.storageClass -}}
{{- end -}}
{{- $classes = concat $classes (.Values.extraStorageClasses | default list) -}}
{{- range $classes -}}
{{- if hasKey $names .name -}}
{{- fail (printf "StorageClass name %q is used twice (storageClass.name and extraStorageClasses[].name must all differ)" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- $class := .name -}}
{{- if .exports -}}
{{- range .exports -}}
{{- if not (hasKey $served (toString .)) -}}
{{- fail (printf "StorageClass %q lists export %q, which is not served: the exports are %s (\"default\" is the export of nfs.server)" $class (toString .) (keys $served | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- else if not (hasKey $served "default") -}}
{{- fail (printf "StorageClass %q has no exports, so its claims would go to the export \"default\", which only nfs.server declares: list its exports (storageClass.exports or extraStorageClasses[].exports), or set nfs.server" $class) -}}
{{- end -}}
{{- if and (include "nfs-provisioner.isSet" .overcommitRatio) (ne (include "nfs-provisioner.boolString" .capacityCheck) "true") -}}
{{- fail (printf "StorageClass %q sets overcommitRatio without capacityCheck: true; the ratio is only checked together with the capacity check" $class) -}}
{{- end -}}
{{- if .defaultClass -}}
{{- $defaults = append $defaults .name -}}
{{- end -}}
{{- end -}}
{{- if gt (len $defaults) 1 -}}
{{- fail (printf "more than one StorageClass has defaultClass: true (%s); a cluster should have one default" (join ", " $defaults)) -}}
{{- end -}}
{{- /*
A variable given twice in env makes server-side apply (helm 4, Flux,
kubectl apply --server-side) reject the Deployment ("duplicate entries for
key"), and client-side apply silently keep the last one.
*/ -}}
{{- $ownEnv := dict "PROVISIONER_NAME" "set storageClass.provisionerName instead" "NFS_SERVER" "set nfs.server instead" "NFS_PATH" "set nfs.path instead" "NFS_EXPORTS" "set exports instead" "ENABLE_LEADER_ELECTION" "set leaderElection.enabled instead" "POD_NAMESPACE" "it holds the pod's namespace, where the Lease lives" "POD_NAME" "it holds the pod's name, the Lease identity" -}}
{{- if .Values.leaderElection.leaseDuration -}}
{{- $_ := set $ownEnv "LEADER_ELECT_LEASE_DURATION" "set leaderElection.leaseDuration only" -}}
{{- end -}}
{{- if .Values.leaderElection.renewDeadline -}}
{{- $_ := set $ownEnv "LEADER_ELECT_RENEW_DEADLINE" "set leaderElection.renewDeadline only" -}}
{{- end -}}
{{- if .Values.leaderElection.retryPeriod -}}
{{- $_ := set $ownEnv "LEADER_ELECT_RETRY_PERIOD" "set leaderElection.retryPeriod only" -}}
{{- end -}}
{{- $extraEnv := dict -}}
{{- range $i, $e := .Values.extraEnv | default list -}}
{{- if hasKey $ownEnv $e.name -}}
{{- fail (printf "extraEnv[%d] sets %s, which the chart sets itself: %s (a variable given twice makes server-side apply reject the Deployment)" $i $e.name (get $ownEnv $e.name)) -}}
{{- end -}}
{{- if hasKey $extraEnv $e.name -}}
{{- fail (printf "extraEnv[%d] sets %s a second time (a variable given twice makes server-side apply reject the Deployment)" $i $e.name) -}}
{{- end -}}
{{- $_ := set $extraEnv $e.name true -}}
{{- end -}}
{{- end -}}
