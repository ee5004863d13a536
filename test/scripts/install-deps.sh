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
# Package installation must not leave a system NFS server running: the Debian
# packages enable nfs-ganesha.service (port 2049, 875, registers NFS with
# rpcbind, owns the org.ganesha.nfsd D-Bus name). Service starts are blocked
# during the install with a temporary policy-rc.d, and afterwards the system
# ganesha units are stopped and disabled if systemd runs them. A system rpcbind
# is harmless (the framework reuses a running one), so it is left alone.
set -euo pipefail

PACKAGES=(nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils fuse3)

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

stop_system_ganesha() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		for unit in nfs-ganesha.service nfs-ganesha-lock.service; do
			if systemctl list-unit-files "$unit" >/dev/null 2>&1; then
				systemctl disable --now "$unit" >/dev/null 2>&1 || true
			fi
		done
	fi
	# Without systemd nothing can start it: Debian ships no init script for
	# nfs-ganesha, only systemd units.
}

if [ "${#missing[@]}" -eq 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		stop_system_ganesha
	fi
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages: ${missing[*]} (run as root: apt-get install -y ${missing[*]})" >&2
	exit 1
fi

# Block service starts from maintainer scripts (invoke-rc.d, deb-systemd-invoke)
# unless the machine already has a policy (Docker images do).
policy=/usr/sbin/policy-rc.d
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

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

stop_system_ganesha

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
