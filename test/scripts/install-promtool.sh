#!/usr/bin/env bash
# Installs the pinned promtool into <repo>/.cache/bin unless it is already
# there, then prints the path of the binary on stdout (progress goes to
# stderr). Built from source through the Go module proxy, the only registry
# CI reaches; the chart tests run the alert rules' unit tests with it.
# Idempotent: a second run builds nothing.
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo}/.cache/bin"
promtool="${bin_dir}/promtool"
stamp="${bin_dir}/.promtool-version"

if [[ -x "${promtool}" && -f "${stamp}" && "$(cat "${stamp}")" == "${PROMETHEUS_VERSION}" ]]; then
  echo "${promtool}"
  exit 0
fi

mkdir -p "${bin_dir}"
echo "installing promtool (prometheus ${PROMETHEUS_VERSION}) into ${bin_dir}" >&2
cd "${TMPDIR:-/tmp}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
GOBIN="${bin_dir}" go install -trimpath -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" >&2
echo "${PROMETHEUS_VERSION}" >"${stamp}"
echo "${promtool}"
