"""`kvminfo <registered command>`: commands that live outside kvminfo/ register
through the kvminfo.commands entry point group (PyPA entry points specification:
an ``entry_points.txt`` INI file in the distribution's ``.dist-info``), read with
importlib.metadata. The group is read only for a name that is not built in and
for --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvminfo import cli


def test_the_installed_device_plugin_command_is_found() -> None:
    # pyproject.toml [project.entry-points."kvminfo.commands"] of this distribution
    assert cli._module_for("device-plugin") == "kvminfo_plugin.command"
    assert "device-plugin" in cli._usage()


def test_another_distribution_registering_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "kvminfo_extra-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvminfo-extra\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text(
        "[console_scripts]\nextra = kvminfo_extra.cli:main\n\n"
        "[kvminfo.commands]\nextra-cmd = kvminfo_extra.command\nprobe = kvminfo_extra.probe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registered = cli._registered()
    assert registered["extra-cmd"] == "kvminfo_extra.command"
    assert "extra" not in registered  # another group's entry point
    assert "probe" not in registered and cli._module_for("probe") == "kvminfo.commands.probe"  # built in wins
    assert "extra-cmd" in cli._usage() and "(unavailable: " in cli._usage()  # not importable: said, not a traceback
