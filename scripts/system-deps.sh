#!/usr/bin/env bash
# Ensure the system packages kvminfo needs on Debian 12/13 (and Ubuntu) are present.
# As root with apt: installs what is missing. Otherwise: says exactly what is
# missing and exits 1. Used by `make run` and `make test`.
#
# PYTHON (default python3) is the interpreter `make` builds .venv from: it must
# be >= 3.11 and have its C headers, because libvirt-python is compiled against
# Python.h and libvirt.h on install (PyPI ships it as source only).
# The list is what a minimal debootstrapped bookworm/trixie root lacks
# (scripts/fresh-machine-check.sh shows it).
set -euo pipefail
PYTHON=${PYTHON:-python3}

# package -> a file it installs (cheap presence check without dpkg locks)
declare -A NEED=(
  [libvirt-daemon]=/usr/sbin/libvirtd
  [libvirt-daemon-driver-qemu]=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
  [libvirt-clients]=/usr/bin/virsh
  [qemu-system-x86]=/usr/bin/qemu-system-x86_64
  [libvirt-dev]=/usr/include/libvirt/libvirt.h
  [pkg-config]=/usr/bin/pkg-config
  [gcc]=/usr/bin/gcc
  [make]=/usr/bin/make
  [git]=/usr/bin/git
  [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
  [openssl]=/usr/bin/openssl   # the tests' TLS API server stand-in makes its certificate with it
)
missing=()
for pkg in "${!NEED[@]}"; do
  [ -e "${NEED[$pkg]}" ] || missing+=("$pkg")
done

if ! command -v "$PYTHON" >/dev/null; then
  missing+=(python3 python3-venv python3-dev)
else
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "system-deps: kvminfo needs Python >= 3.11; $PYTHON is $version (Debian 12 has 3.11, Debian 13 has 3.13)" >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  # libvirt-python compiles against Python.h: Debian's python3 ships without it.
  if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    missing+=(python3-dev)
  fi
fi

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
