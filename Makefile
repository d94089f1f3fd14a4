# kvminfo developer entry points. The two that matter:
#   make run   - install everything, bring up libvirt, probe this node
#   make test  - install everything, bring up libvirt, run the whole suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# pyenv's shim costs ~95 ms per call; only used to create the venv.
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test install system-deps libvirt-up bench soak proto image clean

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@bash scripts/system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

libvirt-up:
	@bash scripts/libvirt-up.sh

run: install libvirt-up
	$(VENV)/bin/kvminfo probe

test: install libvirt-up
	KVMINFO_REQUIRE_REAL=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
