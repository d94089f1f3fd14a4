"""Device health as the device plugin's own pod sees it: the check runs in a
real runc container with runc's default device rules (`runc spec`: deny all,
then null, zero, full, random, urandom, tty, ptmx, pts, tun), so every node
the pod was not allocated answers open() with EPERM from the device cgroup.
A node the kernel has no driver for must still be Unhealthy there.

The nodes are made with mknod (the numbers are what a static /dev/vhost-net
or /dev/kvm carries: Documentation/admin-guide/devices.txt misc minors 238
and 232) in a directory the container sees through a read-only bind of the
host's /. Which numbers are unregistered is read from this host's
/proc/devices and /proc/misc by the test itself."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import runc_container
from conftest import require_real

PROBE = """
import errno, json, os, sys
from kvminfo_plugin.devices.health import check_path
out = {}
for path in sys.argv[1:]:
    health = check_path(path)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY))
        opened = "ok"
    except OSError as err:
        opened = errno.errorcode[err.errno]
    out[os.path.basename(path)] = [health.healthy, health.reason, opened]
master, slave = os.openpty()  # a pty slave: devpts, no /sys/dev/char entry
health = check_path(os.ttyname(slave))
out["pty"] = [health.healthy, health.reason, "ok"]
print(json.dumps(out))
"""


def _registered() -> tuple[set[int], set[int]]:
    """(char majors, misc minors) as this host's kernel lists them."""
    text = Path("/proc/devices").read_text()
    chars = text.split("Character devices:", 1)[1].split("Block devices:", 1)[0]
    majors = {int(m) for m in re.findall(r"^\s*(\d+)\s", chars, re.MULTILINE)}
    minors = {int(m) for m in re.findall(r"^\s*(\d+)\s", Path("/proc/misc").read_text(), re.MULTILINE)}
    return majors, minors


def test_a_node_without_a_driver_is_unhealthy_inside_a_confined_pod(tmp_path: Path) -> None:
    runc_container.require_runc()
    majors, minors = _registered()
    assert 10 in majors  # the misc major
    free_misc = [m for m in (238, 232, *range(243, 255)) if m not in minors]  # 243-254: reserved for local use
    free_major = next(m for m in (*range(60, 64), *range(120, 128)) if m not in majors)  # local/experimental
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    expected: dict[str, bool] = {}
    for name, rdev in [("vhost-net", os.makedev(10, free_misc[0])), ("kvm-static", os.makedev(10, free_misc[1])),
                       ("no-major", os.makedev(free_major, 0))]:
        os.mknod(nodes / name, 0o666 | 0o020000, rdev)
        expected[name] = False
    if os.path.exists("/dev/kvm") and os.minor(os.stat("/dev/kvm").st_rdev) in minors:
        os.mknod(nodes / "kvm", 0o666 | 0o020000, os.stat("/dev/kvm").st_rdev)  # the real, registered one
        expected["kvm"] = True
    expected["pty"] = True
    os.chmod(tmp_path, 0o755)
    bundle = tmp_path / "bundle"
    done = runc_container.run(bundle, runc_container.default_spec(
        bundle, [sys.executable, "-c", PROBE, *(str(p) for p in sorted(nodes.iterdir()))]))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # The premise: inside the container the device cgroup refuses every node it was not given.
    assert {seen[n][2] for n in ("vhost-net", "kvm-static", "no-major")} == {"EPERM"}, seen
    assert {name: healthy for name, (healthy, _, _) in seen.items()} == expected, seen
    assert "misc minor" in seen["vhost-net"][1] and "/proc/misc" in seen["vhost-net"][1], seen
    assert f"major {free_major} not in /proc/devices" in seen["no-major"][1], seen


def test_without_proc_to_ask_the_open_decides(tmp_path: Path) -> None:
    """No /proc/devices (a /proc not mounted): the check falls back to open(), here unconfined,
    where the kernel's own answer for a major nobody registered is ENXIO (fs/char_dev.c chrdev_open)."""
    from kvminfo_plugin.devices.health import check_path

    if os.geteuid() != 0:
        require_real("mknod needs root")
        pytest.skip("mknod needs root")
    majors, _ = _registered()
    free_major = next(m for m in (*range(60, 64), *range(120, 128)) if m not in majors)
    node = tmp_path / "no-major"
    os.mknod(node, 0o600 | 0o020000, os.makedev(free_major, 0))
    assert check_path(str(node), proc_devices=str(tmp_path / "absent")).reason == f"no driver for char {free_major}:0 (ENXIO)"
    assert check_path(str(node)).reason == f"no driver for char {free_major}:0 (major {free_major} not in /proc/devices)"
