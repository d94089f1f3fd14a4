# kvminfo image, used by every DaemonSet in deploy/.
#
#   docker build -t kvminfo .                          # or podman build / buildah bud
#   docker build --build-arg KVMINFO_COMMIT=$(git describe --always --dirty) -t kvminfo .
#   docker build --target plugin -t kvminfo-plugin .   # the device plugin only: no libvirt, no QEMU
#
# Stages: `build` makes a virtualenv (libvirt-python compiles against
# libvirt-dev); `settings` holds what both images say about themselves (PATH,
# user, entrypoint, labels); `plugin-root` is the base image plus that venv and
# a user record for uid 65532; `full-root` adds libvirt's QEMU driver and QEMU,
# which the labellers run inside the pod (qemu:///embed?root=DIR, no host
# daemon), then takes out what no process of the image runs. The images,
# `plugin` and the last, default `full`, are a root tree copied into
# `settings` as one layer: files a later layer deleted would still count in
# an image's size, and a COPY into an empty stage keeps none of the base
# image's settings.
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
# Wheels' extension modules without their symbol tables and debug sections
# (strip --strip-unneeded keeps what the dynamic loader needs; grpc's cygrpc
# and pydantic_core come stripped): 3.3 MB, mostly PyYAML's _yaml (2.7 -> 0.4)
# and libvirt-python's libvirtmod (1.0 -> 0.3), which pip compiled here.
RUN find /opt/kvminfo/lib -name '*.so' -exec strip --strip-unneeded {} + \
 && /opt/kvminfo/bin/python -c 'import yaml._yaml, libvirt, libvirt_qemu, grpc, google._upb._message, charset_normalizer.md'


FROM scratch AS settings
# Read-only root filesystem in every pod: never try to write __pycache__.
# LANG as the official Python image sets it.
ENV PATH=/opt/kvminfo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
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

FROM ${PYTHON_IMAGE} AS plugin-root
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

# The device plugin only: no libvirt, no QEMU.
FROM settings AS plugin
COPY --from=plugin-root / /

FROM plugin-root AS full-root
# libvirt's QEMU driver and QEMU, for the labellers' embedded libvirt
# (kvminfo/sources/libvirt_embed.py). Only what capability probing needs:
# - qemu-system-x86_64; qemu-system-i386, the microvm build, the storage
#   daemon and the persistent-reservation helper go (libvirt's domain
#   capabilities for x86_64 ask qemu-system-x86_64 only; host capabilities
#   then list no i686 guest, which no label reads);
# - no firmware, option ROMs or keymaps (/usr/share/qemu, seabios, ipxe): the
#   probe runs QEMU with `-machine none`, which loads none of them (documentation
#   and translations: the base's dpkg excludes, as Debian's slim images have);
# - tini's static build (kvminfo's PID 1 is the dynamic /usr/bin/tini);
# - the libvirt-qemu user and group, and group kvm, that Debian's QEMU driver
#   looks up before it reads qemu.conf (libvirt-daemon-system would make them,
#   with systemd and polkit; a root kvminfo's qemu.conf says user = "root").
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-daemon-driver-qemu qemu-system-x86 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && rm -f /usr/bin/qemu-system-i386 /usr/libexec/qemu-system-i386 /usr/bin/qemu-system-x86_64-microvm \
          /usr/bin/qemu-storage-daemon /usr/bin/qemu-pr-helper /usr/bin/tini-static \
 && rm -rf /usr/share/qemu/* /usr/share/seabios /usr/lib/ipxe \
 && { getent group kvm >/dev/null || groupadd --system kvm; } \
 && groupadd --system libvirt-qemu \
 && useradd --system --gid libvirt-qemu --groups kvm --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin libvirt-qemu \
 && qemu-system-x86_64 --version
# QEMU's loadable modules for displays, audio, UIs, chardevs and USB
# passthrough (spice, qxl, GL, ALSA, sndio, curses, braille, usb-host/redir,
# smartcard), and the libraries only they link (spice-server with GStreamer
# and its iso-codes data, ALSA, sndio, Opus, ORC, libepoxy, GBM/DRM, NSS via
# libcacard, PC/SC, libusb, usbredir): 18 MB. A capability probe opens no
# display, sound card or USB device; QEMU loads modules on demand and leaves
# out, without a message, the devices whose module is absent. Domain
# capabilities against the untrimmed image lose exactly spice graphics, qxl
# video, USB redirdev and the spicevmc channel (no label reads them); host
# capabilities do not change. The TCG accelerator and the plain virtio-gpu
# modules stay.
# dpkg --purge keeps its database true to what is on disk (scanners read it).
RUN m=/usr/lib/x86_64-linux-gnu/qemu \
 && rm -f $m/audio-* $m/chardev-* $m/ui-* $m/hw-usb-* $m/hw-display-qxl.so $m/hw-display-*-gl.so $m/hw-s390x-* \
 && dpkg --purge --force-depends libspice-server1 libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 iso-codes \
        liborc-0.4-0 libopus0 libunwind8 libdw1 libasound2 libasound2-data libsndio7.0 libbrlapi0.8 libepoxy0 \
        libgbm1 libdrm2 libdrm-common libwayland-server0 libcacard0 libnss3 libpcsclite1 libusb-1.0-0 \
        libusbredirparser1 >/dev/null \
 && rm -f /usr/lib/qemu/virtiofsd /usr/lib/qemu/virtfs-proxy-helper /usr/lib/qemu/qemu-bridge-helper
# What only builds an image and no pod runs, as distroless images leave it out:
# - the package manager: apt, its libraries and keyring check, debconf, and
#   perl-base, which only maintainer scripts and debconf run (16 MB; dpkg and
#   its database stay, so `dpkg -l` and image scanners still see every package);
# - the openssl command, which ca-certificates runs when it installs (libssl
#   stays), and e2fsprogs' tools for ext2/3/4 disks a pod never formats or
#   checks, with their libraries (2.8 MB);
# - ensurepip's pip/setuptools wheels (the venv has no pip either), and stdlib
#   parts no kvminfo process imports: distutils, lib2to3, the test package,
#   pydoc's topic data, idlelib, tkinter, turtledemo (7 MB; the official
#   image's _tkinter goes with tkinter: it links a Tk that image leaves out);
# - glibc's iconv modules for legacy charsets (gconv, 8 MB): Python decodes
#   with its own codecs and libvirt's XML is UTF-8; the Unicode ones stay;
# - the ICU libraries nothing links (i18n, io, tu, test: 3.5 MB; libxml2 needs
#   libicuuc and its data only).
RUN installed=$(dpkg-query -W -f '${Package} ' apt libapt-pkg6.0 libxxhash0 gpgv debconf perl-base \
        openssl e2fsprogs libext2fs2 libss2 logsave \
        python3-pip-whl python3-setuptools-whl python3-distutils python3-lib2to3 2>/dev/null || true) \
 && dpkg --purge --force-depends --force-remove-essential $installed >/dev/null \
 && rm -rf /var/cache/debconf /var/lib/apt /var/cache/apt /etc/apt \
 && stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))') \
 && rm -rf "$stdlib"/distutils "$stdlib"/lib2to3 "$stdlib"/test "$stdlib"/pydoc_data "$stdlib"/ensurepip \
           "$stdlib"/idlelib "$stdlib"/tkinter "$stdlib"/turtledemo "$stdlib"/lib-dynload/_tkinter.* \
 && find /usr/lib/x86_64-linux-gnu/gconv -name '*.so' -not -name 'UTF-*' -not -name 'UNICODE.so' -delete \
 && rm -f /usr/lib/x86_64-linux-gnu/libicui18n.so.* /usr/lib/x86_64-linux-gnu/libicuio.so.* \
          /usr/lib/x86_64-linux-gnu/libicutu.so.* /usr/lib/x86_64-linux-gnu/libicutest.so.*
# Every program and library left finds every library it links (ldd), and the
# probes' programs still start: a trim above that took too much fails here.
RUN find /usr/bin /usr/sbin /usr/lib /usr/libexec /opt -type f \( -perm -u+x -o -name '*.so*' \) -exec sh -c \
        'for f; do if [ "$(head -c 4 "$f" | od -An -c | tr -d " ")" = 177ELF ]; then \
             ldd "$f" 2>/dev/null | sed -n "s|.*not found|$f: &|p"; fi; done' \
        sh {} + >/tmp/unresolved \
 && if [ -s /tmp/unresolved ]; then cat /tmp/unresolved; exit 1; fi \
 && rm /tmp/unresolved \
 && qemu-system-x86_64 --version && /opt/kvminfo/bin/kvminfo --version \
 && /opt/kvminfo/bin/python -c 'import libvirt, grpc, kubernetes.client, pydantic, yaml, prometheus_client'

# The default image: the device plugin and the labellers.
FROM settings AS full
COPY --from=full-root / /
# tini as PID 1: libvirt starts its QEMU probe with -daemonize, so the probe
# is re-parented to the container's PID 1; kvminfo there would never reap it,
# and libvirt then waits 40 s per probe for a zombie to go (SIGTERM, 10 s,
# SIGKILL, 30 s: "Failed to terminate process ... Device or resource busy";
# seen here, 82 s for the first round instead of 8). tini reaps every orphan
# and forwards signals to kvminfo (a pod's `command:` replaces it).
ENTRYPOINT ["tini", "--", "kvminfo"]
# A new ENTRYPOINT drops the CMD it inherits (Dockerfile reference, ENTRYPOINT).
CMD ["--help"]
