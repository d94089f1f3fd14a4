#!/usr/bin/env bash
# Ensure the system packages kvminfo needs on Debian/Ubuntu are present.
# As root with apt: installs what is missing. Otherwise: says exactly what is
# missing and exits 1. Used by `make run` and `make test`.
set -euo pipefail

# package -> a file it installs (cheap presence check without dpkg locks)
declare -A NEED=(
  [libvirt-daemon]=/usr/sbin/libvirtd
  [libvirt-daemon-driver-qemu]=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
  [libvirt-clients]=/usr/bin/virsh
  [qemu-system-x86]=/usr/bin/qemu-system-x86_64
  [libvirt-dev]=/usr/include/libvirt/libvirt.h
  [pkg-config]=/usr/bin/pkg-config
  [gcc]=/usr/bin/gcc
)
missing=()
for pkg in "${!NEED[@]}"; do
  [ -e "${NEED[$pkg]}" ] || missing+=("$pkg")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "system-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: libvirt-daemon-system would pull systemd upgrades.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "system-deps: missing Debian packages: ${missing[*]}" >&2
echo "system-deps: install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
exit 1
