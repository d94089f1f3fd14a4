# kvminfo developer entry points. The two that matter:
#   make run   - install everything, bring up libvirt, probe this node
#   make test  - install everything, bring up libvirt, run the whole suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# pyenv's shim costs ~95 ms per call; only used to create the venv.
PYTHON ?= python3
STAMP := $(VENV)/.installed

# The suite needs root (see docs/dev/setup.md): stop in one line before installing anything.
ROOT_GOALS := $(filter test soak,$(MAKECMDGOALS))
ifneq ($(ROOT_GOALS),)
ifneq ($(shell id -u),0)
$(error make $(firstword $(ROOT_GOALS)) needs root: the suite opens /dev/kvm read-write, makes device nodes, runs private libvirtd daemons in mount namespaces and checks permissions as other uids; run it as root (sudo make $(firstword $(ROOT_GOALS))); make run works without root)
endif
endif

# make lint (run by make test): ruff over the whole repository (tests, soak, bench and scripts
# too, with the same rules: issue 18); mypy on both packages, --strict for kvminfo/
# (pyproject.toml [[tool.mypy.overrides]]).
MYPY_PATHS := kvminfo plugin/kvminfo_plugin plugin/kvminfo_dra

.PHONY: lint run test install system-deps libvirt-up libvirt-down bench soak proto bench-plugin bench-featurefile bench-publish image clean proto-dra bench-dra

system-deps:
	@PYTHON=$(PYTHON) bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@PYTHON=$(PYTHON) bash scripts/system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# An editable install compiles nothing; the NFD hook starts ~15 ms faster with bytecode.
	$(PY) -m compileall -q kvminfo plugin/kvminfo_plugin plugin/kvminfo_dra
	@touch $(STAMP)

install: $(STAMP)

libvirt-up:
	@bash scripts/libvirt-up.sh

# Stops only the libvirtd that libvirt-up started (its pid file), never another.
libvirt-down:
	@bash scripts/libvirt-up.sh --stop

# libvirt failing to come up does not stop the probe: it reports libvirt (and KVM) with the reason.
run: install
	@bash scripts/libvirt-up.sh || echo "make run: libvirt-up failed (line above); probing anyway" >&2
	$(VENV)/bin/kvminfo probe

test: install libvirt-up lint
	KVMINFO_REQUIRE_REAL=1 $(PY) -m pytest -q

# ruff and mypy (settings in pyproject.toml), installed with the test extras.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

# Fault and abuse suite (soak/, never collected by `make test`): the short variant of
# every scenario; LONG=1 runs the counts of issue 5. Results: soak/results/<variant>.json,
# printed as the table of docs/dev/soak.md (`$(PY) -m soak.report --readme` updates it there).
SOAK_VARIANT := $(if $(LONG),long,short)
soak: install libvirt-up
	KVMINFO_REQUIRE_REAL=1 KVMINFO_SOAK_LONG=$(if $(LONG),1,0) $(PY) -m pytest -q --timeout=1200 soak
	$(PY) -m soak.report --variant $(SOAK_VARIANT)

# Regenerate the device plugin's protobuf/gRPC modules from plugin/kvminfo_plugin/kubelet/v1beta1/api.proto.
# protoc writes `import api_pb2`; rewrite it to the package-relative import.
proto: install
	$(PY) -m grpc_tools.protoc -Iplugin/kvminfo_plugin/kubelet/v1beta1 --python_out=plugin/kvminfo_plugin/kubelet/v1beta1 --pyi_out=plugin/kvminfo_plugin/kubelet/v1beta1 \
		--grpc_python_out=plugin/kvminfo_plugin/kubelet/v1beta1 plugin/kvminfo_plugin/kubelet/v1beta1/api.proto
	sed -i 's/^import api_pb2 as api__pb2$$/from . import api_pb2 as api__pb2/' plugin/kvminfo_plugin/kubelet/v1beta1/api_pb2_grpc.py

# Every benchmark; figures go into docs/dev/performance.md by hand.
bench: install libvirt-up
	$(PY) bench/bench_hook.py
	$(PY) bench/bench_libvirt_featurefile.py
	$(PY) bench/bench_plugin.py

bench-plugin: install
	$(PY) bench/bench_plugin.py

bench-featurefile: install libvirt-up
	$(PY) bench/bench_libvirt_featurefile.py

bench-publish: install
	$(PY) bench/bench_publish.py

# The image every manifest in deploy/ runs, built from ./Dockerfile with buildah
# (no Docker engine or registry needed; elsewhere `docker build .` builds the
# same), plus its plugin-only target, imported into a containerd of its own and
# each DaemonSet container run there under runc as its pod runs it, the
# labellers asking the image's own libvirt (scripts/image.sh; docs/dev/image.md).
# PYTHON_IMAGE: the base; by default a Debian root made here with
# debootstrap, e.g. PYTHON_IMAGE=python:3.11-slim-bookworm pulls the official one.
IMAGE ?= localhost/kvminfo:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image: install
	IMAGE=$(IMAGE) $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE)) bash scripts/image.sh all

clean:
	bash scripts/image.sh containerd-down
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Regenerate the DRA driver's protobuf/gRPC modules from the byte-exact kubelet protos in
# plugin/kvminfo_dra/api/<api>/api.proto (Kubernetes v1.36.2). Compiled from api/ so each
# file is registered as <api>/api.proto: four files named api.proto (and the device
# plugin's) cannot share protobuf's default descriptor pool under one name.
DRA_APIS := dra_v1 dra_v1beta1 dra_health_v1alpha1 pluginregistration_v1
proto-dra: install
	cd plugin/kvminfo_dra/api && for api in $(DRA_APIS); do \
		../../../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $$api/api.proto || exit 1; \
		sed -i "s/^from $$api import api_pb2 as \(.*\)$$/from . import api_pb2 as \1/" $$api/api_pb2_grpc.py; \
	done

# The DRA driver against the kubelet DRA emulator and the resource.k8s.io stand-in (figures: docs/dra.md).
bench-dra: install libvirt-up
	$(PY) bench/bench_dra.py
