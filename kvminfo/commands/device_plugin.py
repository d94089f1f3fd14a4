"""`kvminfo device-plugin`: the device plugin lives in plugin/ (kvminfo_plugin)."""

from __future__ import annotations


def main(argv: list[str], prog: str) -> int:
    from kvminfo_plugin.main import main as plugin_main

    return plugin_main(argv, prog)
