"""What build this is: the release version plus the commit it was built from.

``kvminfo --version`` and ``kvminfo-device-plugin --version`` print
:func:`version_line`. The commit comes from, in order:

1. ``kvminfo/common/_build.py`` (``COMMIT = "..."``), written by an image build
   (Dockerfile, build argument ``KVMINFO_COMMIT``; ``make image`` passes
   ``git describe``) before ``pip install``, so it ships in the package. Never
   committed (.gitignore).
2. ``git describe`` of the checkout the package runs from (an editable
   install, or a clone on PYTHONPATH): only when the package's parent
   directory is that repository's top level, so a wheel installed inside some
   other repository never reports that repository's commit.
3. ``unknown``.

Only --version and a process serving metrics (its build_info series) pay for this: nothing imports
the module on the NFD hook path.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import kvminfo

UNKNOWN = "unknown"


def describe_checkout(top: Path) -> str | None:
    """``git describe --always --dirty --abbrev=12`` of the repository at ``top``, or None
    when git is missing, refuses (another user's checkout: "dubious ownership") or fails."""
    try:
        done = subprocess.run(["git", "-C", str(top), "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def build_commit() -> str:
    """The commit this build came from (see the module docstring for where it is read)."""
    try:
        recorded: Any = importlib.import_module("kvminfo.common._build")
    except ImportError:
        recorded = None
    commit = getattr(recorded, "COMMIT", "") if recorded is not None else ""
    if commit:
        return str(commit)
    top = Path(kvminfo.__file__).resolve().parent.parent
    if (top / ".git").exists():
        return describe_checkout(top) or UNKNOWN
    return UNKNOWN


def build_info() -> dict[str, str]:
    """The labels of a ``*_build_info`` metric (Prometheus' convention: an info series of
    value 1): ``{"version": ..., "commit": ...}`` as :func:`version_line` prints them."""
    return {"version": kvminfo.__version__, "commit": build_commit()}


def version_line(prog: str) -> str:
    """``PROG VERSION (commit COMMIT)``, e.g. ``kvminfo 0.1.0 (commit v0.1.0-12-g1a2b3c4d5e6f)``."""
    return f"{prog} {kvminfo.__version__} (commit {build_commit()})"


class VersionAction(argparse.Action):
    """argparse's ``--version``, computing the line only when asked (git runs only then)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and the commit it was built from, and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        print(version_line(parser.prog))
        parser.exit()
