"""Helpers shared by the soak modules: variant counts, scenario records, timing, scans.

Kept out of conftest.py so test modules can import them by name.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
RESULTS_DIR = REPO / "soak" / "results"
FAILING_INPUTS_DIR = RESULTS_DIR / "failing-inputs"  # full inputs of failed fuzz runs, to replay them
LONG = os.environ.get("KVMINFO_SOAK_LONG") == "1"
VARIANT = "long" if LONG else "short"
MAX_FAILURE_NOTES = 5


def scaled(short: int, long: int) -> int:
    """The count for this variant: the short run uses smaller counts of the same scenario."""
    return long if LONG else short


def scaled_s(short: float, long: float) -> float:
    return long if LONG else short


@dataclass
class Scenario:
    """Runs of one scenario: how many, how many held, the worst latency seen."""

    family: str
    name: str
    latency_of: str  # what the latency measures, shown in docs/dev/soak.md
    runs: int = 0
    held: int = 0
    worst_latency_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    outcome: str = "not run"  # the pytest outcome of the test that ran it
    notes: str = ""  # extra figures for docs/dev/soak.md (fd/thread counts, RSS, error classes)

    def record(self, held: bool, latency_s: float = 0.0, why: str = "") -> bool:
        self.runs += 1
        self.held += held
        self.worst_latency_s = max(self.worst_latency_s, latency_s)
        if not held and len(self.failures) < MAX_FAILURE_NOTES:
            self.failures.append(why or "did not hold")
        return held

    def check(self, at_least: int = 1) -> None:
        """Fail the test unless there were enough runs and every one held (call after recording all)."""
        assert self.runs >= at_least, f"{self.name}: only {self.runs} runs, expected at least {at_least}"
        assert self.held == self.runs, (f"{self.name}: {self.runs - self.held} of {self.runs} did not hold: "
                                        + "; ".join(self.failures))


class Stopwatch:
    """``with Stopwatch() as sw: ...``; then ``sw.elapsed`` in seconds (monotonic clock)."""

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        self.elapsed = 0.0
        return self

    def __exit__(self, *_exc: object) -> None:
        self.elapsed = time.monotonic() - self.started


def world_writable(root: Path) -> list[str]:
    """Every entry under ``root`` (itself included) that anyone may write; symlinks excluded (always 0777)."""
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # removed while we scanned
            continue
        if mode & stat.S_IWOTH and not stat.S_ISLNK(mode):
            found.append(f"{path} ({stat.filemode(mode)})")
    return found


def kvminfo(*args: str, timeout: float = 60, **popen: object) -> subprocess.CompletedProcess[str]:
    """The real console script, as an operator runs it."""
    return subprocess.run([str(KVMINFO), *args], capture_output=True, text=True, timeout=timeout, **popen)


def label_lines(stdout: str) -> dict[str, str]:
    """`kvminfo labels` output -> {key: value}; a line without '=' is kept whole as a key (then fails checks)."""
    return dict(line.split("=", 1) if "=" in line else (line, "") for line in stdout.splitlines())
