#!/usr/bin/env bash
# Bring up a local libvirtd (no systemd) for kvminfo, warm the QEMU capabilities
# cache, and touch nothing it does not own. Idempotent. Used by `make run`/`make test`.
#
#   scripts/libvirt-up.sh            answer on qemu:///system (start our libvirtd if none answers)
#   scripts/libvirt-up.sh --stop     stop the libvirtd this script started, and only that one
#   scripts/libvirt-up.sh --exec CMD run CMD in a private mount namespace with our libvirt
#                                    configuration (the tests' private libvirtd daemons use it)
#
# What Debian's libvirtd needs on these machines, given privately (bind mounts
# in the daemon's own mount namespace; /etc is never written):
#   - a qemu.conf with user/group "root": /dev/kvm may be root-only (0600, no
#     udev rule), and QEMU running as libvirt-qemu could not open it, so libvirt
#     would call KVM unusable and re-probe QEMU on every call;
#   - the libvirt-qemu user and group Debian's build hard-codes (the QEMU driver
#     looks them up at start-up and fails without them); the package that
#     creates them, libvirt-daemon-system, is not installed (it pulls systemd).
# Our libvirtd is the one whose pid file is $STATE/libvirtd.pid and whose
# command line names that file; no other libvirtd is ever signalled.
set -euo pipefail
STATE=${KVMINFO_LIBVIRT_STATE:-/run/kvminfo-libvirt}
PIDFILE=$STATE/libvirtd.pid
URI=qemu:///system
say() { echo "libvirt-up: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  if [ "${1:-}" = --exec ]; then say "--exec needs root (a mount namespace)"; exit 1; fi
  say "not root; leaving libvirtd alone (kvminfo will report libvirt unavailable if it is down)"
  exit 0
fi

answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

# The pid of the libvirtd this script started, if it still runs.
ours() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$PIDFILE" || return 1
  echo "$pid"
}

# Private files in $STATE, each replaced atomically (a running daemon keeps what it bound).
# Sets BINDS (what in_private_namespace mounts) and CHANGED (the one line that says so).
prepare() {
  local conf=/etc/libvirt/qemu.conf
  CHANGED="qemu.conf runs QEMU as root (so it can open /dev/kvm whatever its mode)"
  BINDS="qemu.conf"
  if [ ! -d /etc/libvirt ]; then say "/etc/libvirt missing (libvirt-daemon installs it)"; exit 1; fi
  mkdir -p -m 0755 "$STATE"
  { grep -vE '^[[:space:]]*(user|group)[[:space:]]*=' "$conf" 2>/dev/null || true
    printf '# kvminfo scripts/libvirt-up.sh: private copy, bind-mounted for its libvirtd only\nuser = "root"\ngroup = "root"\n'
  } >"$STATE/qemu.conf.$$"
  mv -f "$STATE/qemu.conf.$$" "$STATE/qemu.conf"
  if [ ! -f "$conf" ]; then
    # Debian 12's packages ship no qemu.conf without libvirt-daemon-system: there is no file
    # to bind over, so the daemon gets a private copy of the whole directory instead.
    if [ ! -d "$STATE/etc-libvirt" ]; then
      cp -a /etc/libvirt "$STATE/etc-libvirt.$$" && mv -T "$STATE/etc-libvirt.$$" "$STATE/etc-libvirt"
    fi
    cp "$STATE/qemu.conf" "$STATE/etc-libvirt/qemu.conf.$$" && mv -f "$STATE/etc-libvirt/qemu.conf.$$" "$STATE/etc-libvirt/qemu.conf"
    BINDS="etc-libvirt"
    CHANGED="$CHANGED (the host has no qemu.conf: it sees a private copy of /etc/libvirt, its writes there stay in $STATE)"
  fi
  local gid uid
  gid=$(getent group libvirt-qemu | cut -d: -f3 || true)
  if [ -z "$gid" ]; then
    gid=$(free_id /etc/group)
    { cat /etc/group; echo "libvirt-qemu:x:$gid:"; } >"$STATE/group.$$"
    mv -f "$STATE/group.$$" "$STATE/group"
    BINDS="$BINDS group"
  fi
  if ! getent passwd libvirt-qemu >/dev/null; then
    uid=$(free_id /etc/passwd)
    { cat /etc/passwd; echo "libvirt-qemu:x:$uid:$gid:kvminfo libvirt-up (private):/var/lib/libvirt:/usr/sbin/nologin"; } >"$STATE/passwd.$$"
    mv -f "$STATE/passwd.$$" "$STATE/passwd"
    BINDS="$BINDS passwd"
  fi
  case " $BINDS " in *" passwd "*|*" group "*) CHANGED="$CHANGED; the libvirt-qemu user Debian's libvirtd needs exists for it alone" ;; esac
}

# The highest unused id below 1000 (Debian's dynamic system range) in an /etc/passwd-like file.
free_id() {
  local id
  for id in $(seq 999 -1 100); do
    cut -d: -f3 "$1" | grep -qx "$id" || { echo "$id"; return; }
  done
  say "no free system id below 1000 in $1"; exit 1
}

in_private_namespace() {
  # shellcheck disable=SC2016
  unshare --mount --propagation private sh -c '
    s=$1 binds=$2; shift 2
    for b in $binds; do
      case $b in
        qemu.conf) mount --bind "$s/qemu.conf" /etc/libvirt/qemu.conf ;;
        etc-libvirt) mount --bind "$s/etc-libvirt" /etc/libvirt ;;
        passwd|group) mount --bind "$s/$b" "/etc/$b" ;;
      esac
    done
    exec "$@"' sh "$STATE" "$BINDS" "$@"
}

stop_ours() {
  local pid
  if ! pid=$(ours); then say "no libvirtd started by libvirt-up runs; nothing stopped"; return 0; fi
  kill -CONT "$pid" 2>/dev/null || true   # a stopped daemon cannot act on SIGTERM
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
  if [ -e "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  say "stopped libvirtd pid $pid (started by libvirt-up)"
}

start_ours() {
  local pid
  prepare
  mkdir -p /var/log/libvirt
  LIBVIRT_LOG_OUTPUTS="3:file:$STATE/libvirtd.log" in_private_namespace libvirtd -d -p "$PIDFILE"
  for _ in $(seq 100); do answers && break; sleep 0.1; done
  if ! pid=$(ours) || ! answers; then
    local other=""
    if [ -s /run/libvirtd.pid ] && [ "$(cat "/proc/$(cat /run/libvirtd.pid)/comm" 2>/dev/null)" = libvirtd ]; then
      other="; a libvirtd not started by libvirt-up (pid $(cat /run/libvirtd.pid)) holds $URI and is left alone"
    fi
    say "libvirtd did not answer on $URI within 10 s (log: $STATE/libvirtd.log: $(tail -n 1 "$STATE/libvirtd.log" 2>/dev/null))$other"
    exit 1
  fi
  say "started libvirtd pid $pid with private configuration, nothing under /etc changed: $CHANGED (stop it: make libvirt-down)"
}

case "${1:-}" in
  --stop) stop_ours; exit 0 ;;
  --exec) shift; prepare; in_private_namespace "$@"; exit ;;
  "") ;;
  *) say "unknown argument $1 (use --stop or --exec CMD...)"; exit 2 ;;
esac

if answers; then
  if pid=$(ours); then say "libvirtd ready on $URI (pid $pid, started by libvirt-up)"
  else say "libvirtd ready on $URI (not started by libvirt-up: left as it is)"; fi
elif pid=$(ours); then
  kill -CONT "$pid" 2>/dev/null || true   # a test may have left it stopped
  for _ in $(seq 20); do answers && break; sleep 0.1; done
  if ! answers; then stop_ours; start_ours; fi
else
  start_ours
fi

# First domcapabilities probes QEMU (~4 s) and caches it; later calls ~25 ms.
if [ ! -c /dev/kvm ]; then
  say "no /dev/kvm on this host: libvirt cannot offer KVM here (kvminfo probe says why); QEMU capabilities not warmed"
elif ! warm=$(timeout 120 virsh -c "$URI" domcapabilities --virttype kvm 2>&1 >/dev/null); then
  say "warning: virsh domcapabilities --virttype kvm failed: $(echo "$warm" | tr -s '\n' ' ')"
fi
