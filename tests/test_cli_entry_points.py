"""`kvminfo <registered command>` finds the kvminfo.commands entry points without
importing importlib.metadata (issue 12: it was ~2 MiB of the device plugin's RSS
and ~15 ms of its start). The answer must be importlib.metadata's own."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kvminfo import cli


def reference() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=cli.ENTRY_POINT_GROUP) if ep.name not in cli.COMMANDS}


def test_the_installed_entry_points_agree_with_importlib_metadata() -> None:
    assert cli._registered() == reference()
    assert cli._registered()["device-plugin"] == "kvminfo_plugin.command"


def test_another_distribution_registering_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "kvminfo_extra-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvminfo-extra\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text(
        "[console_scripts]\nextra = kvminfo_extra.cli:main\n\n"
        "[kvminfo.commands]\n# a comment\nextra-cmd = kvminfo_extra.command\nother = kvminfo_extra.other\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli._registered() == reference()
    assert cli._registered()["extra-cmd"] == "kvminfo_extra.command"


def test_the_device_plugin_command_never_imports_importlib_metadata() -> None:
    code = ("import sys; from kvminfo.cli import _module_for; assert _module_for('device-plugin'); "
            "print('importlib.metadata' in sys.modules, 'email' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    assert out.split() == ["False", "False"]
