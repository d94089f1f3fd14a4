#!/usr/bin/env bash
# Build the kvminfo image from ./Dockerfile without a Docker engine, import it
# into containerd and run every DaemonSet's container there as its pod runs it.
#
#   scripts/image.sh deps     Debian packages: debootstrap buildah podman containerd runc (as root)
#   scripts/image.sh base     debootstrap a minimal Debian root with python3 + python3-venv and
#                             `podman import` it as $BASE_IMAGE (no registry pull needed)
#   scripts/image.sh build    buildah bud --build-arg PYTHON_IMAGE=$PYTHON_IMAGE --build-arg KVMINFO_COMMIT=$COMMIT:
#                             the default target as $IMAGE, --target plugin as $PLUGIN_IMAGE; sizes
#                             in $WORK/image-size-bytes, $WORK/plugin-image-size-bytes
#   scripts/image.sh import   podman save (docker-archive) | ctr -n k8s.io images import, into a
#                             containerd of our own (own root, state and socket under $WORK)
#   scripts/image.sh run [--cdi]  scripts/image_pods.py: each DaemonSet container under runc via ctr
#                             (--cdi: the device plugin in CDI mode, then deploy/cleanup)
#   scripts/image.sh all      all of the above in order (what `make image` runs)
#   scripts/image.sh clean    stop our containerd, remove $WORK
#
# Everything lives under $WORK (default build/image/): podman/buildah storage, the
# debootstrap root, containerd's root/state/socket. Nothing system-wide is
# configured and nothing outside $WORK is written; the containerd we start is
# stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Absolute, always: podman records its storage paths in its database and refuses
# ("database configuration mismatch") a later call naming them another way.
WORK=$(realpath -m "${WORK:-build/image}")
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=${BASE_IMAGE:-localhost/kvminfo-python-base:$SUITE}
# The Dockerfile's default (python:3.11-slim-bookworm) needs a registry; here
# the local Debian root stands in for it.
PYTHON_IMAGE=${PYTHON_IMAGE:-$BASE_IMAGE}
IMAGE=${IMAGE:-localhost/kvminfo:$VERSION}
# The Dockerfile's device-plugin-only stage, built beside the full image (its size is reported).
PLUGIN_IMAGE=${PLUGIN_IMAGE:-localhost/kvminfo-plugin:$VERSION}
# What `--version` reports as the commit (kvminfo/common/version.py).
COMMIT=${KVMINFO_COMMIT:-$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)}
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)
CTR_DIR=$WORK/containerd
CTR_SOCK=$CTR_DIR/containerd.sock

say() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: run 'scripts/image.sh deps' (as root) first"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

deps() {
  local missing=() pkg
  declare -A bin=([debootstrap]=debootstrap [buildah]=buildah [podman]=podman
                  [containerd]=containerd [runc]=runc)
  for pkg in "${!bin[@]}"; do command -v "${bin[$pkg]}" >/dev/null || missing+=("$pkg"); done
  # podman's network stack and default policy/registries files
  [ -e /usr/lib/podman/netavark ] || missing+=(netavark)
  [ -e /etc/containers/policy.json ] || missing+=(golang-github-containers-common)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]} (install them as root)"
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

base() {
  need debootstrap; need podman
  if podman "${STORE[@]}" image exists "$BASE_IMAGE"; then say "$BASE_IMAGE exists"; return 0; fi
  local root=$WORK/rootfs-$SUITE t0; t0=$(now)
  rm -rf "$root"
  say "debootstrap $SUITE (minbase + python3, python3-venv) into $root"
  debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $WORK/debootstrap.log"
  # The same suites a Debian image carries: security and point-release updates.
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SUITE" >"$root/etc/apt/sources.list"
  # As Debian's slim images do: no documentation, manuals or translations, now
  # or from any later apt-get (copyright files stay).
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    'path-include /usr/share/locale/locale.alias' >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$root" --numeric-owner -c . \
    | podman "${STORE[@]}" import --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  say "base $BASE_IMAGE imported in $(since "$t0") s"
}

# Behind a TLS-inspecting proxy pip needs the host's CA bundle: when this host's
# pip names one (global.cert, as here) or PIP_CERT is set, the RUN steps get it
# and a pip.conf naming it as read-only build-time mounts (never in a layer).
build_mounts() {
  local cert=${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | head -n 1)}
  [ -n "$cert" ] && [ -r "$cert" ] || return 0
  printf '[global]\ncert = /run/kvminfo-build-ca.crt\n' >"$WORK/build-pip.conf"
  printf -- '--volume\n%s:/run/kvminfo-build-ca.crt:ro\n--volume\n%s:/etc/pip.conf:ro\n' "$cert" "$WORK/build-pip.conf"
}

build() {
  need buildah
  local t0 mounts; t0=$(now)
  mapfile -t mounts < <(build_mounts)
  # The local base is never pulled; any other PYTHON_IMAGE is pulled if missing.
  [ "$PYTHON_IMAGE" = "$BASE_IMAGE" ] && mounts+=(--pull-never)
  local target tag
  # --layers: the plugin target reuses the full build's stages instead of building them again.
  for target in full plugin; do
    tag=$IMAGE; [ "$target" = plugin ] && tag=$PLUGIN_IMAGE
    say "buildah bud --target $target --build-arg PYTHON_IMAGE=$PYTHON_IMAGE --build-arg KVMINFO_COMMIT=$COMMIT -t $tag ${mounts[*]}"
    buildah "${STORE[@]}" bud --network host --layers "${mounts[@]}" --target "$target" \
      --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "KVMINFO_COMMIT=$COMMIT" -t "$tag" -f Dockerfile . \
      >"$WORK/build-$target.log" 2>&1 \
      || { tail -20 "$WORK/build-$target.log" >&2; die "build failed: see $WORK/build-$target.log"; }
    say "built $tag in $(since "$t0") s: $(podman "${STORE[@]}" image inspect --format '{{.Size}}' "$tag" \
      | awk '{ printf "%.1f MB", $1 / 1e6 }')"
  done
  podman "${STORE[@]}" image prune -f >/dev/null 2>&1 || true  # the previous build's now untagged images
  printf '%s\n' "$COMMIT" >"$WORK/image-commit"  # what the pod checks expect --version to name
  podman "${STORE[@]}" image inspect --format '{{.Size}}' "$IMAGE" >"$WORK/image-size-bytes"
  podman "${STORE[@]}" image inspect --format '{{.Size}}' "$PLUGIN_IMAGE" >"$WORK/plugin-image-size-bytes"
}

# A containerd of our own: its own root, state, socket and no CRI plugin (no
# kubelet here), so the host's containerd, if any, is never touched.
containerd_up() {
  need containerd; need ctr; need runc
  mkdir -p "$CTR_DIR"
  if [ -S "$CTR_SOCK" ] && ctr -a "$CTR_SOCK" version >/dev/null 2>&1; then return 0; fi
  cat >"$CTR_DIR/config.toml" <<TOML
version = 2
root = "$CTR_DIR/root"
state = "$CTR_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTR_DIR/opt"
TOML
  containerd --config "$CTR_DIR/config.toml" >"$CTR_DIR/containerd.log" 2>&1 &
  echo $! >"$CTR_DIR/containerd.pid"
  for _ in $(seq 100); do
    ctr -a "$CTR_SOCK" version >/dev/null 2>&1 && { say "containerd $(containerd --version | awk '{print $3}') up (pid $(cat "$CTR_DIR/containerd.pid"))"; return 0; }
    kill -0 "$(cat "$CTR_DIR/containerd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -5 "$CTR_DIR/containerd.log" >&2; die "containerd did not start: see $CTR_DIR/containerd.log"
}

containerd_down() {
  local pid
  [ -f "$CTR_DIR/containerd.pid" ] || return 0
  pid=$(cat "$CTR_DIR/containerd.pid")
  if kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe")" = "$(command -v containerd)" ]; then
    kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$CTR_DIR/containerd.pid"
}

import_image() {
  need podman
  containerd_up
  local archive=$WORK/kvminfo-image.tar t0; t0=$(now)
  rm -f "$archive"
  podman "${STORE[@]}" save --format docker-archive -o "$archive" "$IMAGE" 2>/dev/null
  ctr -a "$CTR_SOCK" -n k8s.io images import "$archive" >&2
  say "imported into containerd (namespace k8s.io) in $(since "$t0") s; archive $(du -m "$archive" | cut -f1) MiB"
  ctr -a "$CTR_SOCK" -n k8s.io images ls >&2
}

run_pods() {
  containerd_up
  local py=${PY:-.venv/bin/python}
  [ -x "$py" ] || die "$py not found: run 'make install' first (the run uses tests/kubelet_emulator.py and tests/apiserver_standin.py)"
  rm -rf "$WORK"/pods.*  # the previous run's specs and logs
  "$py" scripts/image_pods.py --address "$CTR_SOCK" --image "$IMAGE" --work "$WORK" --report "$WORK/pods-report.json" \
    --version "$VERSION" --commit "$(cat "$WORK/image-commit" 2>/dev/null || echo "$COMMIT")" "$@"
}

main() {
  mkdir -p "$WORK"
  case "${1:-all}" in
    deps) deps ;;
    base) base ;;
    build) build ;;
    import) import_image ;;
    run) shift; run_pods "$@" ;;
    all) deps; [ "$PYTHON_IMAGE" = "$BASE_IMAGE" ] && base; build; import_image; run_pods ;;
    clean) containerd_down; rm -rf "$WORK" ;;
    containerd-down) containerd_down ;;
    *) die "usage: scripts/image.sh deps|base|build|import|run|all|clean" ;;
  esac
}
main "$@"
