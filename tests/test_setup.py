"""The README's set-up as a user and on a machine without Python's headers (issue 11, items 1 and 3).

Seen: on a fresh Debian `make run` failed compiling libvirt-python (no
Python.h: python3-dev was never installed), and `make test` as a user gave
86 failures and errors, none saying that root is needed. The whole path on
fresh Debian 12/13 roots is scripts/fresh-machine-check.sh (not in CI);
these are the parts a test can show on this machine: uid 65534 runs make and
pytest from this very checkout (tests/other_user.py makes it reachable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from conftest import REPO
from other_user import as_user, reach_script, unreadable_checkout

NOBODY = 65534
USER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}


@pytest.fixture(autouse=True)
def _root_and_util_linux() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user (setpriv, a mount namespace)")
    for tool in ("unshare", "setpriv", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if (why := unreadable_checkout()) is not None:
        pytest.skip(why)


def run_as_nobody(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_user(NOBODY, NOBODY, argv), cwd=REPO, env={**USER_ENV, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("goal", ["test", "soak"])
def test_make_test_as_a_user_stops_in_one_line_saying_why_root_is_needed(goal):
    done = run_as_nobody(["make", "-C", str(REPO), "--no-print-directory", goal])
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"make {goal} needs root: the suite opens /dev/kvm read-write" in line
    assert f"sudo make {goal}" in line


def test_pytest_under_require_real_as_a_user_stops_at_once_saying_why():
    done = run_as_nobody([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_durations.py"],
                         KVMINFO_REQUIRE_REAL="1")
    assert done.returncode == 2
    assert "KVMINFO_REQUIRE_REAL=1 needs root: the suite opens /dev/kvm" in done.stdout + done.stderr
    assert " passed" not in done.stdout and " failed" not in done.stdout  # stopped before any test ran


def test_make_run_as_a_user_probes_and_says_why_what_it_cannot_reach():
    # -o install: this checkout is installed; a user's first run installs into its own clone.
    done = run_as_nobody(["make", "-C", str(REPO), "--no-print-directory", "-s", "-o", "install", "run"])
    assert done.returncode == 0, done.stderr
    assert "libvirt-up: not root; leaving libvirtd alone" in done.stderr
    assert "sources:" in done.stdout and "labels:" in done.stdout
    kvm_row = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["kvm"])
    if os.stat("/dev/kvm").st_mode & 0o006 == 0:  # root-only here: the reason is the permission
        assert "unavailable" in kvm_row and "permission denied" in kvm_row


def test_system_deps_names_python3_dev_when_python_h_is_missing():
    """A Debian python3 without python3-dev: its include directory lacks Python.h
    (hidden here under an empty tmpfs, in a mount namespace of the test's own)."""
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        pytest.skip(f"{include}/Python.h is already missing here")
    python = os.path.realpath(sys.executable)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           reach_script([REPO, python]) +
                           f'mount -t tmpfs kvminfo-test "$0" && exec setpriv --reuid={NOBODY} --regid={NOBODY} '
                           f'--clear-groups env PYTHON="$1" bash "$2"',
                           include, python, str(REPO / "scripts" / "system-deps.sh")],
                          env=USER_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    missing, how = done.stderr.splitlines()
    assert missing.startswith("system-deps: missing Debian packages:")
    assert missing.split(":")[-1].split() == ["python3-dev"]  # the interpreter itself was found and is >= 3.11
    assert how.startswith("system-deps: install them as root: apt-get install --no-install-recommends ")
