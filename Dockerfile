# kvminfo image, used by every DaemonSet in deploy/ (`make image`).
# Stage 1 builds a virtualenv (libvirt-python compiles against libvirt-dev);
# stage 2 carries only that venv and the libvirt client library.
# PYTHON_IMAGE: any Debian-based image with python3 >= 3.11 and its venv module:
# the official python:3.11-slim-bookworm (default, from a registry), or a
# Debian bookworm root with python3 + python3-venv made locally
# (scripts/image.sh base: debootstrap, then `podman import`).
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
RUN python3 -m venv /opt/kvminfo \
 && /opt/kvminfo/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/kvminfo/bin/pip install --no-cache-dir . \
 && /opt/kvminfo/bin/kvminfo --version \
 && /opt/kvminfo/bin/python -m pip uninstall -q -y pip setuptools wheel \
 && /opt/kvminfo/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/kvminfo/lib

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/*
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
# Non-root by default; only the modes that write root-owned host directories
# (device plugin socket dir, NFD's features.d/source.d) set runAsUser: 0.
USER 65532:65532
ENTRYPOINT ["kvminfo"]
CMD ["--help"]
