#!/usr/bin/env bash
# The set-up of docs/dev/setup.md on fresh Debian machines, as a new user would follow it.
# Not part of CI (minutes per release); run it before changing the set-up, the
# prerequisites or scripts/system-deps.sh, and put its figures in docs/dev/fresh-machine.md.
#
#   sudo scripts/fresh-machine-check.sh [--ref REF] [--keep] [--soak] [SUITE...]   (default: bookworm trixie)
#
# For each Debian release: a minimal root made by debootstrap (--variant=minbase;
# the tarball is cached in $KVMINFO_FRESH_CACHE, default /var/cache/kvminfo-fresh),
# and in it, in a PID, mount, UTS and IPC namespace of its own (its own /proc,
# /run, /dev with the host's kvm, tun and vhost-net nodes bound in, /sys bound
# from the host; network shared, for apt and PyPI):
#   1. the set-up page's prerequisites line, as root                 (apt-get install ...)
#   2. a user's `make run` before the system packages are there: must stop, naming them
#   3. root: git clone of REF into /root/kvminfo (/root is 0700), `make run`, `make test`
#      (and `make soak` with --soak: then the root has run all of .ci/run)
#   4. the user: git clone into ~, `make run` (works), `make test` (must stop in one line: needs root)
# It prints each step's wall time and PASS/FAIL, keeps the logs, and exits 1 if any step failed.
# REF (default HEAD) is cloned from a bare copy of this checkout: committed work only.
# The host is not changed: debootstrap and every mount run inside the namespace,
# the root lives under $KVMINFO_FRESH_WORK (default /var/tmp) and is removed
# afterwards unless --keep. The tests' device cgroups (cgroup v1, /sys/fs/cgroup/devices)
# are the host's hierarchy, as in CI; the tests remove what they create.
# TLS: a network that re-signs TLS has its CA in /usr/local/share/ca-certificates;
# those files are copied into the root (ca-certificates picks them up when the
# prerequisites install it) and pip is pointed at the system bundle there.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KVMINFO_FRESH_CACHE:-/var/cache/kvminfo-fresh}
WORK=${KVMINFO_FRESH_WORK:-/var/tmp}
MIRROR=${KVMINFO_FRESH_MIRROR:-http://deb.debian.org/debian}
REF=HEAD
KEEP=0
SOAK=0
suites=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ref) REF=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --soak) SOAK=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fresh-machine-check: unknown option $1" >&2; exit 2 ;;
    *) suites+=("$1"); shift ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

fail() { echo "fresh-machine-check: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, namespaces, chroot)"
for tool in debootstrap unshare chroot git; do
  command -v "$tool" >/dev/null || fail "$tool not installed (apt-get install debootstrap util-linux coreutils git)"
done
[ -c /dev/kvm ] || fail "no /dev/kvm on this host: the root's make test needs it"
commit=$(git -C "$here" rev-parse --verify "$REF^{commit}") || fail "$REF is not a commit in $here"
# The set-up page: docs/dev/setup.md, or README.md at commits before the docs moved to docs/.
setup_page=docs/dev/setup.md
git -C "$here" cat-file -e "$commit:$setup_page" 2>/dev/null || setup_page=README.md
prereq=$(git -C "$here" show "$commit:$setup_page" | sed -n 's/^\(apt-get install --no-install-recommends .*\)$/\1/p' | head -n 1)
[ -n "$prereq" ] || fail "$setup_page at $REF has no 'apt-get install --no-install-recommends ...' prerequisites line"
arch=$(dpkg --print-architecture)
mkdir -p "$CACHE"

# Runs inside the new namespaces: $1 suite, $2 root, $3 tarball, $4 bare repository, $5 logs,
# $6 shared dir or "", $7 the set-up page's prerequisites line.
inside() {
  set -euo pipefail
  local suite=$1 root=$2 tarball=$3 source=$4 logs=$5 shared=$6 prereq=$7 failed=0
  local results=$logs/results
  : >"$results"

  step() {  # step NAME EXPECT COMMAND...   EXPECT: ok | probe (exit 0, kvm and libvirt ok) | stop:<text the stop must hold>
    local name=$1 expect=$2 start end rc verdict log
    log=$logs/$(echo "$name" | tr -cs 'A-Za-z0-9.-' '_' | sed 's/_$//').log
    shift 2
    start=$(date +%s.%N)
    set +e
    "$@" >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s.%N)
    case "$expect" in
      ok) [ $rc -eq 0 ] && verdict=PASS || verdict="FAIL (exit $rc)" ;;
      probe) if [ $rc -ne 0 ]; then verdict="FAIL (exit $rc)"
             elif grep -qE '^  kvm +ok ' "$log" && grep -qE '^  libvirt +ok ' "$log"; then verdict="PASS (kvm ok, libvirt ok)"
             else verdict="FAIL (the probe did not find both KVM and libvirt ok)"; fi ;;
      stop:*) if [ $rc -ne 0 ] && grep -qF -- "${expect#stop:}" "$log"; then verdict="PASS (stopped as documented)"
              else verdict="FAIL (exit $rc, expected a stop saying '${expect#stop:}')"; fi ;;
    esac
    case "$verdict" in FAIL*) failed=1 ;; esac
    printf '%-9s %-34s %8.1f s  %s\n' "$suite" "$name" "$(awk "BEGIN { print $end - $start }")" "$verdict" \
      | tee -a "$results"
  }
  detail() {  # detail STEP PATTERN: the step log's lines that say what happened
    grep -E -- "$2" "$logs/$(echo "$1" | tr -cs 'A-Za-z0-9.-' '_' | sed 's/_$//').log" | tail -n 3 | sed 's/^ */          /' | tee -a "$results" || true
  }
  in_root() { timeout --kill-after=30 3600 chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "$1"; }
  as_user() { timeout --kill-after=30 3600 chroot "$root" /usr/bin/env -i HOME=/home/kvmuser TERM=dumb LANG=C.UTF-8 \
                PATH=/usr/local/bin:/usr/bin:/bin setpriv --reuid=kvmuser --regid=kvmuser --init-groups bash -c "$1"; }

  step debootstrap ok debootstrap --variant=minbase --unpack-tarball="$tarball" "$suite" "$root" "$MIRROR"

  # The machine as booted: / a mount point, its own /proc, /run, /dev (container-style), the host's /sys.
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs -o mode=0755 kvminfo-fresh "$root/run"
  mount -t tmpfs -o mode=0755,nosuid kvminfo-fresh "$root/dev"
  local node
  for node in null zero full random urandom tty kvm net/tun vhost-net; do
    [ -e "/dev/$node" ] || continue
    mkdir -p "$(dirname "$root/dev/$node")"
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  mkdir "$root/dev/pts" "$root/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
  ln -s pts/ptmx "$root/dev/ptmx"
  mount -t tmpfs -o mode=1777 kvminfo-fresh "$root/dev/shm"
  ln -s /proc/self/fd "$root/dev/fd"
  ln -s /proc/self/fd/0 "$root/dev/stdin"; ln -s /proc/self/fd/1 "$root/dev/stdout"; ln -s /proc/self/fd/2 "$root/dev/stderr"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  fi
  # the repository each clones from is its own (git refuses a repository another uid owns)
  cp -a "$source" "$root/tmp/kvminfo-root.git"
  cp -a "$source" "$root/tmp/kvminfo-user.git"
  chroot "$root" useradd --create-home --shell /bin/bash kvmuser
  chroot "$root" chown -R kvmuser: /tmp/kvminfo-user.git
  if [ -n "$shared" ]; then  # as CI lays it: beside the clone, without write bits
    cp -a "$shared" "$root/root/shared" && chmod -R a-w "$root/root/shared"
    cp -a "$shared" "$root/home/kvmuser/shared" && chmod -R a-w "$root/home/kvmuser/shared"
  fi

  # 1. the set-up page's prerequisites line, as root
  step "prerequisites (set-up page line)" ok in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive ${prereq/apt-get install/apt-get install -y -q}"
  step "user: clone" ok as_user "git clone -q /tmp/kvminfo-user.git ~/kvminfo"
  step "user: make run, no system pkgs" "stop:system-deps: missing Debian packages:" as_user "cd ~/kvminfo && make run"
  detail "user: make run, no system pkgs" "^system-deps: missing"
  step "root: clone into /root (0700)" ok in_root "[ \$(stat -c %a /root) = 700 ] && git clone -q /tmp/kvminfo-root.git /root/kvminfo"
  step "root: make run" probe in_root "cd /root/kvminfo && make run"
  detail "root: make run" "^libvirt-up:|^  (kvm|libvirt) "
  step "root: make test" ok in_root "cd /root/kvminfo && make test"
  detail "root: make test" "(passed|failed|error).* in [0-9.]+s"
  if [ "$SOAK" = 1 ]; then
    step "root: make soak" ok in_root "cd /root/kvminfo && make soak"
    detail "root: make soak" "(passed|failed|error).* in [0-9.]+s"
  fi
  step "user: make run" ok as_user "cd ~/kvminfo && make run"
  detail "user: make run" "^  (kvm|libvirt) "
  step "user: make test" "stop:make test needs root" as_user "cd ~/kvminfo && make test"
  return $failed
}

status=0
shared_dir=""
# pwd -P: ../shared may be a symlink (it is on the development machines), and cp -a would copy the
# link itself, dangling inside the root, so the corpus tests skipped there
[ -d "$here/../shared" ] && shared_dir=$(cd "$here/../shared" && pwd -P)
for suite in "${suites[@]}"; do
  tarball=$CACHE/$suite-$arch-minbase.tgz
  if [ ! -s "$tarball" ]; then
    echo "fresh-machine-check: making $tarball (once)" >&2
    scratch=$(mktemp -d "$WORK/kvminfo-fresh-tarball.XXXX")
    debootstrap --variant=minbase --make-tarball="$tarball.tmp" "$suite" "$scratch" "$MIRROR" >"$CACHE/$suite-tarball.log" 2>&1 \
      || { rm -rf "$scratch"; fail "debootstrap --make-tarball for $suite failed (see $CACHE/$suite-tarball.log)"; }
    mv "$tarball.tmp" "$tarball"
    rm -rf "$scratch"
  fi
  run=$(mktemp -d "$WORK/kvminfo-fresh.$suite.XXXX")
  root=$run/root
  logs=$run/logs
  mkdir -p "$root" "$logs"
  # A clean clone of the commit: a bare copy whose HEAD is a branch at it (nothing in $here changes).
  git clone -q --bare --no-local "$here" "$run/kvminfo.git"
  git -C "$run/kvminfo.git" update-ref refs/heads/checked "$commit"
  git -C "$run/kvminfo.git" symbolic-ref HEAD refs/heads/checked
  echo "fresh-machine-check: $suite, commit $(git -C "$here" rev-parse --short "$commit"), root $root, logs $logs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  started=$(date +%s)
  set +e
  unshare --pid --fork --mount-proc --mount --uts --ipc --propagation private \
    bash -c "$(declare -f inside); MIRROR='$MIRROR' here='$here' SOAK=$SOAK inside \"\$@\"" fresh \
    "$suite" "$root" "$tarball" "$run/kvminfo.git" "$logs" "$shared_dir" "$prereq"
  rc=$?
  set -e
  printf '%-9s %-34s %8d s  %s (load average now %s)\n' "$suite" "total" "$(( $(date +%s) - started ))" \
    "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  [ $rc -eq 0 ] || status=1
  if [ $KEEP -eq 0 ]; then rm -rf "$root"; fi
  echo "fresh-machine-check: logs in $logs" >&2
done
exit $status
