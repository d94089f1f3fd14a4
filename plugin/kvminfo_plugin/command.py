"""The `kvminfo device-plugin` subcommand, registered with the CLI through the
``kvminfo.commands`` entry point group (pyproject.toml), so ``kvminfo/`` never
imports the plugin.

An entry in that group names a module with ``SUMMARY: str`` (one line for
``kvminfo --help``) and ``main(argv: list[str], prog: str) -> int``. This module
stays import-light: the plugin itself is imported only when the command runs.
"""

from __future__ import annotations

SUMMARY = "serve /dev/kvm (and other char devices) to the kubelet over device plugin API v1beta1"


def main(argv: list[str], prog: str) -> int:
    from kvminfo_plugin.main import main as plugin_main

    return plugin_main(argv, prog)
