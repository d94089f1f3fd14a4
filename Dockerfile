# kvminfo image, used by every DaemonSet in deploy/ (`make image`).
# Stage 1 builds a virtualenv (libvirt-python compiles against libvirt-dev);
# stage 2 carries only that venv and the libvirt client library.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kvminfo ./kvminfo
COPY plugin ./plugin
RUN python -m venv /opt/kvminfo \
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
