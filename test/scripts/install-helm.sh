#!/usr/bin/env bash
# Installs the pinned helm into <repo>/.cache/bin unless it is already there,
# then prints the path of the binary on stdout (progress goes to stderr).
# helm is built from source through the Go module proxy, the only registry CI
# reaches; the ldflags are the ones helm's own Makefile sets, so `helm version`
# and the Kubernetes version `helm template`/`helm lint` assume are the
# release's, not the v1.20 fallback a bare `go install` gets.
# Idempotent: a second run builds nothing.
#
#   test/scripts/install-helm.sh                    # -> <repo>/.cache/bin/helm
#   HELM_VERSION=v3.18.6 test/scripts/install-helm.sh
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.18.4}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo}/.cache/bin"
helm="${bin_dir}/helm"
stamp="${bin_dir}/.helm-version"

if [[ -x "${helm}" && -f "${stamp}" && "$(cat "${stamp}")" == "${HELM_VERSION}" ]]; then
  echo "${helm}"
  exit 0
fi

mkdir -p "${bin_dir}"
echo "installing helm ${HELM_VERSION} into ${bin_dir}" >&2

# Work outside the repository so its go.mod can't interfere, with the Go
# installed here (helm's go.mod names an older toolchain, which is fine).
cd "${TMPDIR:-/tmp}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

# The Kubernetes minor helm reports is that of the client-go it is built with.
gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
k8s_minor="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${gomod}" | head -n1)"
if [[ -z "${k8s_minor}" ]]; then
  echo "cannot find the client-go version in ${gomod}" >&2
  exit 1
fi

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.metadata="
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

GOBIN="${bin_dir}" go install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
echo "${HELM_VERSION}" >"${stamp}"
echo "${helm}"
