# kvminfo image, used by every DaemonSet in deploy/.
#
#   docker build -t kvminfo .                          # or podman build / buildah bud
#   docker build --build-arg KVMINFO_COMMIT=$(git describe --always --dirty) -t kvminfo .
#   docker build --target plugin -t kvminfo-plugin .   # the device plugin only: no libvirt, no QEMU
#
# Stages: `build` makes a virtualenv (libvirt-python compiles against
# libvirt-dev); `plugin` is the base image plus that venv and a user record for
# uid 65532; the last, default stage adds libvirt's QEMU driver and QEMU, which
# the labellers run inside the pod (qemu:///embed?root=DIR, no host daemon).
# `make image` builds the same file with buildah on a machine without a
# registry (scripts/image.sh: the base made locally with debootstrap).
#
# PYTHON_IMAGE: any Debian bookworm image with python3 >= 3.11 and its venv
# module: the official python:3.11-slim-bookworm (default, from a registry),
# or a Debian root with python3 + python3-venv made locally (scripts/image.sh base).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Python.h: the official image ships it for its own interpreter; Debian's
# python3 needs python3-dev for it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
 && if ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))'; then \
        apt-get install -y --no-install-recommends python3-dev; fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kvminfo ./kvminfo
COPY plugin ./plugin
# The commit `--version` reports (kvminfo/common/version.py); the context has
# no .git (.dockerignore), so it comes as a build argument or is "unknown".
ARG KVMINFO_COMMIT=
# kubernetes/aio: the asyncio copy of the whole API client (68 MB of source,
# twice that compiled), and aiohttp with its own dependencies, which only that
# copy imports (12 MB); kvminfo uses the synchronous client only. The rest of
# kubernetes ships as bytecode only (compileall -b puts each .pyc where its .py
# was, which Python imports without the source): 34 MB of generated API
# source no traceback needs.
RUN if [ -n "$KVMINFO_COMMIT" ]; then printf 'COMMIT = "%s"\n' "$KVMINFO_COMMIT" >kvminfo/common/_build.py; fi \
 && python3 -m venv /opt/kvminfo \
 && /opt/kvminfo/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/kvminfo/bin/pip install --no-cache-dir . \
 && /opt/kvminfo/bin/kvminfo --version \
 && /opt/kvminfo/bin/python -m pip uninstall -q -y aiohttp aiohttp-retry aiosignal aiohappyeyeballs yarl multidict \
        frozenlist propcache \
 && /opt/kvminfo/bin/python -m pip uninstall -q -y pip setuptools wheel \
 && k8s=$(echo /opt/kvminfo/lib/python3*/site-packages/kubernetes) \
 && rm -rf "$k8s/aio" \
 && find "$k8s" -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/kvminfo/bin/python -m compileall -q -f -b -j 0 "$k8s" \
 && find "$k8s" -name '*.py' -delete \
 && /opt/kvminfo/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/kvminfo/lib \
 && /opt/kvminfo/bin/python -c 'import kubernetes.client, kubernetes.config'


FROM ${PYTHON_IMAGE} AS plugin
# A user record for the pods' uid 65532: libvirt (and anything calling
# getpwuid) refuses a uid it cannot look up.
RUN groupadd --gid 65532 kvminfo \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kvminfo
# Same base image, same interpreter path: the venv works where it was built.
# Its bytecode is hash-based and unchecked (compileall above): with pip's
# default mtime-stamped .pyc, a COPY that shifts a source's mtime (seen with
# buildah: core_v1_api.py one second later than its .pyc recorded) makes
# Python ignore the .pyc and compile the source again at every start on the
# read-only root (kubernetes' 4.4 MB core_v1_api.py alone: +1.3 s CPU and
# +74 MiB, which got the publisher OOM-killed under its 128Mi limit).
COPY --from=build /opt/kvminfo /opt/kvminfo
# Read-only root filesystem in every pod: never try to write __pycache__.
ENV PATH=/opt/kvminfo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ARG KVMINFO_COMMIT=
LABEL org.opencontainers.image.title=kvminfo \
      org.opencontainers.image.revision=$KVMINFO_COMMIT \
      org.opencontainers.image.licenses=Apache-2.0
# Non-root by default; only the modes that write root-owned host directories
# (device plugin socket dir, NFD's features.d/source.d) set runAsUser: 0.
USER 65532:65532
ENTRYPOINT ["kvminfo"]
CMD ["--help"]

FROM plugin AS full
USER 0:0
# libvirt's QEMU driver and QEMU, for the labellers' embedded libvirt
# (kvminfo/sources/libvirt_embed.py). Only what capability probing needs:
# - qemu-system-x86_64; qemu-system-i386, the microvm build, the storage
#   daemon and the persistent-reservation helper go (libvirt's domain
#   capabilities for x86_64 ask qemu-system-x86_64 only; host capabilities
#   then list no i686 guest, which no label reads);
# - no firmware, option ROMs or keymaps (/usr/share/qemu, seabios, ipxe): the
#   probe runs QEMU with `-machine none`, which loads none of them (documentation
#   and translations: the base's dpkg excludes, as Debian's slim images have);
# - the libvirt-qemu user and group, and group kvm, that Debian's QEMU driver
#   looks up before it reads qemu.conf (libvirt-daemon-system would make them,
#   with systemd and polkit; a root kvminfo's qemu.conf says user = "root").
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-daemon-driver-qemu qemu-system-x86 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && rm -f /usr/bin/qemu-system-i386 /usr/libexec/qemu-system-i386 /usr/bin/qemu-system-x86_64-microvm \
          /usr/bin/qemu-storage-daemon /usr/bin/qemu-pr-helper \
 && rm -rf /usr/share/qemu/* /usr/share/seabios /usr/lib/ipxe \
 && { getent group kvm >/dev/null || groupadd --system kvm; } \
 && groupadd --system libvirt-qemu \
 && useradd --system --gid libvirt-qemu --groups kvm --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin libvirt-qemu \
 && qemu-system-x86_64 --version
# tini as PID 1: libvirt starts its QEMU probe with -daemonize, so the probe
# is re-parented to the container's PID 1; kvminfo there would never reap it,
# and libvirt then waits 40 s per probe for a zombie to go (SIGTERM, 10 s,
# SIGKILL, 30 s: "Failed to terminate process ... Device or resource busy";
# seen here, 82 s for the first round instead of 8). tini reaps every orphan
# and forwards signals to kvminfo (a pod's `command:` replaces it).
ENTRYPOINT ["tini", "--", "kvminfo"]
USER 65532:65532
