"""The DRA driver's two entry points, as the device plugin has them (kvminfo_plugin.command):

- ``kvminfo dra-driver``: registered with the CLI through the ``kvminfo.commands``
  entry point group (pyproject.toml), so ``kvminfo/`` never imports the driver;
- ``kvminfo-dra-driver`` (pyproject.toml ``[project.scripts]``, what deploy/dra runs).
"""

from __future__ import annotations

import sys

SUMMARY = "publish /dev/kvm with this node's KVM facts as a DRA device (resource.k8s.io) and prepare claims for it"
SCRIPT = "kvminfo-dra-driver"


def main(argv: list[str], prog: str) -> int:
    from kvminfo_dra.main import main as driver_main

    return driver_main(argv, prog)


def run() -> int:
    """The ``kvminfo-dra-driver`` console script, under the CLI's guard (one line, never a traceback)."""
    from kvminfo_dra.upstream import run_guarded

    return run_guarded(SCRIPT, lambda: main(sys.argv[1:], SCRIPT))
