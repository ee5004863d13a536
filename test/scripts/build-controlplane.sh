#!/usr/bin/env bash
# Builds the control-plane binaries the tests in test/framework run:
#   kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes,
#   pinned in test/controlplane/go.mod) and etcd (test/controlplane/etcd).
# Output: .cache/controlplane/<version>/bin/ under the repository root.
#
# It does nothing when the binaries are there and were built from the same
# inputs: a stamp file records a hash of this script and of both modules'
# go.mod/go.sum/sources. A cold build takes about 8-10 minutes on 2 cores;
# dependencies come from the Go module proxy.
#
# Usage: test/scripts/build-controlplane.sh [--force]
# Env:   CONTROLPLANE_CACHE_DIR overrides .cache/controlplane/<version>.
set -euo pipefail

K8S_VERSION=v1.33.13

die() {
	echo "build-controlplane: ERROR: $*" >&2
	exit 1
}
log() { echo "build-controlplane: $*"; }

force=false
case "${1:-}" in
"") ;;
--force) force=true ;;
*) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${script_dir}/../.." && pwd)
module_dir="${repo_root}/test/controlplane"
etcd_module_dir="${module_dir}/etcd"
out_root="${CONTROLPLANE_CACHE_DIR:-${repo_root}/.cache/controlplane/${K8S_VERSION}}"
bin_dir="${out_root}/bin"
stamp="${out_root}/stamp"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)

command -v go >/dev/null 2>&1 || die "go is not on PATH"
[[ -f "${module_dir}/go.mod" ]] || die "missing ${module_dir}/go.mod"
[[ -f "${etcd_module_dir}/go.mod" ]] || die "missing ${etcd_module_dir}/go.mod"

# The stamp covers everything that decides the output, so editing a pin or
# this script rebuilds. Go's toolchain version is part of it too.
inputs_hash() {
	{
		echo "${K8S_VERSION}"
		go env GOVERSION GOOS GOARCH
		sha256sum "${BASH_SOURCE[0]}" \
			"${module_dir}"/go.mod "${module_dir}"/go.sum "${module_dir}"/*.go \
			"${etcd_module_dir}"/go.mod "${etcd_module_dir}"/go.sum "${etcd_module_dir}"/*.go |
			awk '{print $1}'
	} | sha256sum | awk '{print $1}'
}

up_to_date() {
	[[ -f "${stamp}" ]] || return 1
	[[ "$(cat "${stamp}")" == "$1" ]] || return 1
	local b
	for b in "${binaries[@]}"; do
		[[ -x "${bin_dir}/${b}" ]] || return 1
	done
}

mkdir -p "${out_root}"
want=$(inputs_hash)

# Two test processes may ask for the binaries at once: one builds, the other
# waits on the lock and then finds them up to date.
exec 9>"${out_root}/.lock"
flock 9

if ! $force && up_to_date "${want}"; then
	log "up to date: ${bin_dir}"
	exit 0
fi

log "building Kubernetes ${K8S_VERSION} control plane into ${bin_dir} (a cold build takes ~10 minutes)"
start=$(date +%s)

# Build into a temporary directory and move the result in place only when every
# binary built, so an interrupted build never leaves a half-written binary.
tmp_bin=$(mktemp -d "${out_root}/bin.tmp.XXXXXX")
trap 'rm -rf "${tmp_bin}"' EXIT

# The go.mod of a dependency carries no commit, so gitCommit is a placeholder;
# buildDate is the tag's time from the module proxy, which keeps the build
# reproducible. Clients parse gitVersion/gitMajor/gitMinor; the apiserver also
# checks gitVersion against its compiled-in binary version (1.33).
cd "${module_dir}"
export GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
build_date=$(go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes) ||
	die "cannot resolve k8s.io/kubernetes in ${module_dir}/go.mod"
[[ -n "${build_date}" ]] || build_date=1970-01-01T00:00:00Z
major=${K8S_VERSION#v}
major=${major%%.*}
minor=${K8S_VERSION#v*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
	ldflags+=" -X ${pkg}.gitMajor=${major}"
	ldflags+=" -X ${pkg}.gitMinor=${minor}"
	ldflags+=" -X ${pkg}.gitCommit=0000000000000000000000000000000000000000"
	ldflags+=" -X ${pkg}.gitTreeState=clean"
	ldflags+=" -X ${pkg}.buildDate=${build_date}"
done

log "go build kube-apiserver kube-controller-manager kube-scheduler ($(go env GOVERSION))"
go build -trimpath -ldflags "${ldflags}" -o "${tmp_bin}/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler ||
	die "go build of the Kubernetes binaries failed in ${module_dir} (see the output above)"

log "go build etcd ($(cd "${etcd_module_dir}" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3))"
(cd "${etcd_module_dir}" && go build -trimpath -ldflags "-s -w" -o "${tmp_bin}/etcd" .) ||
	die "go build of etcd failed in ${etcd_module_dir} (see the output above)"

for b in "${binaries[@]}"; do
	[[ -x "${tmp_bin}/${b}" ]] || die "build finished but ${b} is missing"
done

rm -rf "${bin_dir}"
chmod 755 "${tmp_bin}" # mktemp -d creates it 0700
mv "${tmp_bin}" "${bin_dir}"
echo "${want}" >"${stamp}"

log "done in $(($(date +%s) - start))s:"
for b in "${binaries[@]}"; do
	log "  $(du -h "${bin_dir}/${b}" | awk '{print $1}')	${bin_dir}/${b}"
done
