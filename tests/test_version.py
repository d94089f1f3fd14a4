"""`kvminfo --version` and `kvminfo-device-plugin --version` tell builds apart: the release
plus the commit (issue 19, item 7; before, both builds said `kvminfo 0.1.0` and the
plugin's --version was a usage error). The image's answer (a commit recorded at build
time) is checked through the image by scripts/image_pods.py (`make image`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import KVMINFO, REPO

import kvminfo
from kvminfo.common import version

PLUGIN = KVMINFO.with_name("kvminfo-device-plugin")


def git_describe() -> str:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout, or no git")
    done = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"git describe refuses here: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.mark.parametrize("program", [KVMINFO, PLUGIN])
def test_both_programs_print_the_release_and_this_checkouts_commit(program):
    expected_commit = git_describe()
    if (REPO / "kvminfo" / "common" / "_build.py").exists():
        pytest.skip("this checkout holds an image build's kvminfo/common/_build.py")
    done = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"{program.name} {kvminfo.__version__} (commit {expected_commit})\n"


def test_a_commit_recorded_at_build_time_wins(monkeypatch):
    monkeypatch.setitem(sys.modules, "kvminfo.common._build", types.SimpleNamespace(COMMIT="v0.1.0-3-g0123456789ab"))
    assert version.version_line("kvminfo") == f"kvminfo {kvminfo.__version__} (commit v0.1.0-3-g0123456789ab)"


def test_outside_a_checkout_without_a_record_the_commit_is_unknown(monkeypatch, tmp_path):
    installed = tmp_path / "site-packages" / "kvminfo" / "__init__.py"  # as pip installs it: no .git beside
    installed.parent.mkdir(parents=True)
    monkeypatch.setattr(kvminfo, "__file__", str(installed))
    monkeypatch.setitem(sys.modules, "kvminfo.common._build", None)  # import -> ImportError
    assert version.build_commit() == "unknown"


def test_a_checkout_git_refuses_gives_unknown_not_an_error(tmp_path: Path):
    (tmp_path / ".git").write_text("gitdir: /nonexistent\n")  # a broken worktree link
    assert version.describe_checkout(tmp_path) is None
