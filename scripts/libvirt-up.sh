#!/usr/bin/env bash
# Bring up a local libvirtd (no systemd) the way these machines need it, and
# warm the QEMU capabilities cache. Idempotent. Used by `make run`/`make test`.
# The two fixes (see docs/libvirt.md): the libvirt-qemu user Debian's build
# hard-codes, and qemu.conf running QEMU as root because /dev/kvm is 0600.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "libvirt-up: not root; leaving libvirtd alone (kvminfo will report libvirt unavailable if it is down)" >&2
  exit 0
fi
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd --system -g kvm -G libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
conf=/etc/libvirt/qemu.conf
if ! grep -q '^user = "root"' "$conf" 2>/dev/null; then
  printf 'user = "root"\ngroup = "root"\n' >> "$conf"
fi
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  pkill -CONT -x libvirtd 2>/dev/null || true   # a test may have left it stopped
  if ! virsh -c qemu:///system version >/dev/null 2>&1; then
    pkill -x libvirtd 2>/dev/null || true
    rm -f /run/libvirtd.pid
    mkdir -p /var/log/libvirt /var/lib/libvirt /var/cache/libvirt
    libvirtd -d
    for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
  fi
fi
# First domcapabilities probes QEMU (~4 s) and caches it; later calls ~25 ms.
virsh -c qemu:///system domcapabilities --virttype kvm >/dev/null
echo "libvirt-up: libvirtd ready on qemu:///system" >&2
