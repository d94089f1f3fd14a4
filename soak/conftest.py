"""Soak infrastructure: per-scenario results and shared fixtures.

`make soak` runs the short variant; `make soak LONG=1` (KVMINFO_SOAK_LONG=1)
the long one with the counts issue 5 names. Each scenario records every run
(held or not, and how long it took) through the ``scenario`` fixture; at the
end of the session the results are written atomically to
soak/results/<variant>.json, which soak/report.py renders as the table of docs/dev/soak.md.

The suite lives outside tests/ so that `make test` never collects it. It
reuses tests/conftest.py (the libvirt fixtures) and the helpers beside it by
putting tests/ on sys.path; nothing here re-implements them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from soak.harness import REPO, RESULTS_DIR, VARIANT, Scenario, world_writable

sys.path.insert(1, str(REPO / "tests"))
# Re-exported so pytest registers the private libvirtd fixture for the soak tests as well.
from conftest import private_libvirtd  # noqa: E402,F401

from kvminfo.common.atomic import write_atomic  # noqa: E402

_scenarios: list[Scenario] = []
_OWNED = pytest.StashKey[list]()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Callable[[str, str, str], Scenario]:
    """``scenario(family, name, latency_of)`` -> a Scenario that lands in the results file."""
    def make(family: str, name: str, latency_of: str) -> Scenario:
        found = Scenario(family, name, latency_of)
        _scenarios.append(found)
        request.node.stash.setdefault(_OWNED, []).append(found)
        return found
    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.when == "call" or report.failed:
        for owned in item.stash.get(_OWNED, []):
            owned.outcome = "failed" if report.failed else report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _scenarios:
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    # Only a run of the whole suite makes the figures of docs/dev/soak.md; a selection (-k, one file) is kept apart.
    whole = session.config.args in (["soak"], ["soak/"]) and not session.config.option.keyword \
        and not session.config.option.markexpr
    document = {
        "variant": VARIANT,
        "finished": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "scenarios": [asdict(s) for s in _scenarios],
    }
    name = VARIANT if whole else f"{VARIANT}-partial"
    write_atomic(RESULTS_DIR / f"{name}.json", (json.dumps(document, indent=1) + "\n").encode())


# Every scenario's temp dir is scanned when it ends: the product must never leave a world-writable file.
_left_behind = Scenario("Security", "No world-writable file left in any scenario's temp dir", "n/a")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private temp dir with a short path (unix socket paths must stay under 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-soak.", dir="/tmp"))
    try:
        yield directory
        if _left_behind not in _scenarios:
            _scenarios.append(_left_behind)
        found = world_writable(directory)
        _left_behind.record(not found, 0.0, ", ".join(found))
        _left_behind.outcome = "passed" if _left_behind.held == _left_behind.runs else "failed"
        assert not found, f"world-writable: {found}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
