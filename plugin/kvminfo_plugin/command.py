"""The device plugin's two entry points.

- ``kvminfo device-plugin``: registered with the CLI through the
  ``kvminfo.commands`` entry point group (pyproject.toml), so ``kvminfo/``
  never imports the plugin. An entry in that group names a module with
  ``SUMMARY: str`` (one line for ``kvminfo --help``) and
  ``main(argv: list[str], prog: str) -> int``.
- ``kvminfo-device-plugin`` (pyproject.toml ``[project.scripts]``, what the
  DaemonSet runs): the same command under its own name.

``kvminfo --help`` imports this module to list the command: the plugin itself is
imported only when the command runs.
"""

from __future__ import annotations

import sys

SUMMARY = "serve /dev/kvm (and other char devices) to the kubelet over device plugin API v1beta1"
SCRIPT = "kvminfo-device-plugin"


def main(argv: list[str], prog: str) -> int:
    from kvminfo_plugin.main import main as plugin_main

    return plugin_main(argv, prog)


def run() -> int:
    """The ``kvminfo-device-plugin`` console script: the command under the CLI's own
    guard (one line and an exit status for a bad config or environment, never a traceback)."""
    from kvminfo.common.guard import run_guarded

    return run_guarded(SCRIPT, lambda: main(sys.argv[1:], SCRIPT))
