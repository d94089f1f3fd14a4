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
 && /opt/kvminfo/bin/kvminfo --version

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/*
# Same base image, same interpreter path: the venv works where it was built.
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
