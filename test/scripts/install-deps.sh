#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests need:
#   nfs-ganesha, nfs-ganesha-vfs  userspace NFS server (test/framework/nfs.go)
#   rpcbind                       ganesha must register with a portmapper at startup
#   libnfs-utils                  nfs-ls / nfs-cp / nfs-cat, the userspace NFS client
#   fuse3                         fusermount3 and /etc/fuse.conf for test/faultfs, the FUSE
#                                 export with injected faults (root mounts without fusermount3)
#
# Idempotent: when everything is installed it only runs dpkg -s and exits.
# Installing needs root; without root it names the missing packages and exits 1.
#
# The host's services are left as they were: a unit that was enabled or
# running before (a system NFS server the machine really serves) is never
# touched. Only our own install is kept from starting anything: service starts
# are blocked during it with a temporary policy-rc.d, and a unit that our
# install enabled or started (the Debian packages enable nfs-ganesha.service
# and rpcbind) is disabled or stopped again, exactly that and nothing more.
# When nothing is missing the script changes nothing at all.
set -euo pipefail

PACKAGES=(nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils fuse3)

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

# Units the packages ship that an install may enable or start.
UNITS=(nfs-ganesha.service nfs-ganesha-lock.service nfs-ganesha-config.service rpcbind.service rpcbind.socket)

have_systemd() {
	[ -d "${INSTALL_DEPS_SYSTEMD_DIR:-/run/systemd/system}" ] && command -v systemctl >/dev/null 2>&1
}

# unit_state prints "<enabled> <active>" for a unit, e.g. "yes no".
unit_state() {
	local enabled=no active=no
	systemctl is-enabled --quiet "$1" 2>/dev/null && enabled=yes
	systemctl is-active --quiet "$1" 2>/dev/null && active=yes
	echo "$enabled $active"
}

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages: ${missing[*]} (run as root: apt-get install -y ${missing[*]})" >&2
	exit 1
fi

# Block service starts from maintainer scripts (invoke-rc.d, deb-systemd-invoke)
# unless the machine already has a policy (Docker images do).
policy=${INSTALL_DEPS_POLICY_RC_D:-/usr/sbin/policy-rc.d} # tests override both
created_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	created_policy=1
fi
cleanup() {
	if [ -n "$created_policy" ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT

declare -A before=()
if have_systemd; then
	for unit in "${UNITS[@]}"; do
		before[$unit]=$(unit_state "$unit")
	done
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Undo what our install did to each unit, and only that. Without systemd
# nothing starts them: policy-rc.d blocked the init scripts.
if have_systemd; then
	for unit in "${UNITS[@]}"; do
		read -r was_enabled was_active <<<"${before[$unit]}"
		read -r is_enabled is_active <<<"$(unit_state "$unit")"
		if [ "$was_active" = no ] && [ "$is_active" = yes ]; then
			echo "install-deps: stopping $unit, which the install started" >&2
			systemctl stop "$unit" || true
		fi
		if [ "$was_enabled" = no ] && [ "$is_enabled" = yes ]; then
			echo "install-deps: disabling $unit, which the install enabled" >&2
			systemctl disable --quiet "$unit" || true
		fi
	done
fi

for p in "${PACKAGES[@]}"; do
	if ! installed "$p"; then
		echo "install-deps: $p is still not installed" >&2
		exit 1
	fi
done
for b in ganesha.nfsd nfs-ls nfs-cp nfs-cat; do
	command -v "$b" >/dev/null 2>&1 || { echo "install-deps: $b not found after install" >&2; exit 1; }
done
echo "install-deps: done" >&2
