"""The tests that run kvminfo as another uid pass from a checkout whose parents are closed.

Seen (issue 11): from a clone under /root (mode 0700) they failed with
``Permission denied`` on ``.venv/bin/kvminfo``, so ``.ci/run`` failed and
``make soak`` never ran. Here, in a private mount namespace, this very
checkout's parent directory becomes 0700 and two of those tests run from
there (the fresh-machine check runs the whole suite from a clone under /root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO
from other_user import as_user, closed_ancestors, reach_script

# The ones issue 11 names; each runs kvminfo as a non-root uid.
OTHER_UID_TESTS = ["tests/test_features_file.py::test_unwritable_directory_exits_non_zero",
                   "tests/test_deploy.py::test_publisher_runs_as_its_pod_does"]


def needs_root_and_util_linux() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a private mount namespace and setpriv to another uid")
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) not installed")


@pytest.fixture
def closed_dir():
    top = Path(tempfile.mkdtemp(prefix="kvminfo-closed.", dir="/tmp"))  # 0700, as mktemp makes it
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_closed_ancestors_lists_each_closed_directory_top_down_with_the_entries_on_the_way(closed_dir):
    inner = closed_dir / "inner"
    (inner / "a" / "deep").mkdir(parents=True)
    (inner / "b").mkdir()
    inner.chmod(0o700)
    (inner / "a").chmod(0o755)
    plan = closed_ancestors([inner / "a" / "deep", inner / "b", closed_dir / "inner"])
    ours = [(d, entries) for d, entries in plan if closed_dir in (d, *d.parents)]
    assert ours == [(closed_dir, ["inner"]), (inner, ["a", "b"])]


def test_a_script_in_nested_closed_directories_runs_as_nobody(closed_dir):
    needs_root_and_util_linux()
    inner = closed_dir / "inner"
    inner.mkdir(mode=0o700)
    script = inner / "hello"
    script.write_text("#!/bin/sh\nid -u\n")
    script.chmod(0o755)
    plain = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(script)],
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0 and "Permission denied" in plain.stderr  # what the other-uid tests met
    script_only = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   reach_script([script]) + f"exec setpriv --reuid=65534 --regid=65534 --clear-groups {script}"]
    done = subprocess.run(script_only, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "65534\n", "")
    assert oct(closed_dir.stat().st_mode & 0o777) == oct(0o700)  # nothing changed outside the namespace


def test_the_other_uid_tests_pass_from_a_checkout_under_a_0700_directory():
    needs_root_and_util_linux()
    parent = REPO.parent
    if parent == Path("/"):
        pytest.skip("the checkout is at / level: no parent directory to close")
    # In a namespace of its own the checkout's parent becomes a root-owned 0700 directory
    # (a tmpfs holding only the checkout and ../shared, bind-mounted back): the checkout keeps
    # its path, which its venv has written into its scripts, as a clone under /root has.
    keep = [p.name for p in (REPO, parent / "shared") if p.exists()]
    holds = "".join(f'h{i}=$(mktemp -d) && mount --rbind "{parent}/{name}" "$h{i}" && ' for i, name in enumerate(keep))
    back = "".join(f'mkdir "{parent}/{name}" && mount --rbind "$h{i}" "{parent}/{name}" && umount -R "$h{i}" && '
                   for i, name in enumerate(keep))
    script = (holds + f'mount -t tmpfs -o mode=0700 kvminfo-test "{parent}" && ' + back +
              f'test "$(stat -c %a {parent})" = 700 && cd "{REPO}" && '
              f'exec "{REPO}/.venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts= "$@"')
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           *OTHER_UID_TESTS], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KVMINFO_REQUIRE_REAL": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"{len(OTHER_UID_TESTS)} passed" in done.stdout, done.stdout[-2000:]


def test_as_user_drops_to_the_uid_with_no_groups():
    needs_root_and_util_linux()
    done = subprocess.run(as_user(65534, 65534, [sys.executable, "-c",
                                                 "import os; print(os.getuid(), os.getgid(), os.getgroups())"]),
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "65534 65534 []\n"), done.stderr
