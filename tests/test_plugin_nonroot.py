"""Non-root processes open the device they were given, on a host whose node is
0600 root (as /dev/kvm is on hosts without systemd's udev rule), in a real runc
container with the pod's user and runc's default device rules.

- CDI mode: the plugin's own spec, injected the way CDI v1.1.0 does it
  (cdi_rules.oci_device): the node gets the spec's fileMode (0666 by default), so
  any uid in the container opens it, also a process that drops to another user
  as libvirt does for QEMU. Without a fileMode, CDI v1.1.0 copies the host's 0600
  and gives the node to the process's uid: that one user only.
- Device specs (the default mode): DeviceSpec has no mode, so the plugin cannot
  choose one; containerd's CRI (internal/cri/opts/spec_linux_opts.go WithDevices)
  copies the host node's mode, uid and gid, and with
  device_ownership_from_security_context = true gives uid/gid to the pod's
  runAsUser/runAsGroup. Both outcomes are shown here.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cdi_rules
import pytest
import runc_container
from conftest import require_real

from kvminfo_plugin.config import config_from_mapping
from kvminfo_plugin.devices.allocation import DeviceSpecPolicy
from kvminfo_plugin.devices.cdi import build_spec

QEMU_UID = 107  # Debian's libvirt-qemu user: what libvirt runs QEMU as
POD_UID = 65532  # the shipped examples' runAsUser
# Open the node read-write and ask KVM_GET_API_VERSION (_IO(0xAE, 0x00), include/uapi/linux/kvm.h):
# Documentation/virt/kvm/api.rst says it returns 12, the stable API version.
OPEN = """
import fcntl, os, sys
uid = int(sys.argv[2])
if uid != os.getuid():
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
try:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CLOEXEC)
except OSError as err:
    print(err.strerror)
else:
    print("api", fcntl.ioctl(fd, 0xAE00))
"""


@pytest.fixture
def host_node(tmp_path: Path) -> Path:
    """A 0600 root node with /dev/kvm's numbers: a host whose udev gives /dev/kvm no wider mode."""
    runc_container.require_runc()
    if not os.path.exists("/dev/kvm"):
        require_real("no /dev/kvm on this machine")
        pytest.skip("no /dev/kvm")
    node = tmp_path / "host-kvm"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
    os.chmod(node, 0o600)
    return node


def _open_in_container(tmp_path: Path, device: dict, rule: dict, user: tuple[int, int], opener: int,
                       caps: list[str] | None = None) -> str:
    bundle = tmp_path / f"bundle-{user[0]}-{opener}-{len(list(tmp_path.iterdir()))}"
    spec = runc_container.default_spec(bundle, ["/usr/bin/python3", "-c", OPEN, device["path"], str(opener)])
    spec["process"]["user"] = {"uid": user[0], "gid": user[1]}
    if caps is not None:
        spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    spec["linux"]["devices"] = [device]
    spec["linux"]["resources"]["devices"].append(rule)
    done = runc_container.run(bundle, spec)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _cdi_node(host_node: Path, **resource: object) -> dict:
    [config] = config_from_mapping({"resources": [{"name": "test.kvminfo.io/kvm", "devices": ["/dev/kvm"],
                                                   "cdi": True, **resource}]}).resources
    spec = build_spec(config, resolve=lambda _path: str(host_node))
    assert cdi_rules.problems(spec) == [], json.dumps(spec)
    [node] = spec["devices"][0]["containerEdits"]["deviceNodes"]
    assert node["path"] == "/dev/kvm" and node["hostPath"] == str(host_node)
    return node


def test_cdi_mode_any_uid_in_the_container_opens_a_0600_hosts_node(tmp_path: Path, host_node: Path) -> None:
    node = _cdi_node(host_node)
    assert node["fileMode"] == 0o666
    # A root container without CAP_DAC_OVERRIDE whose QEMU runs as another user (libvirt in the pod).
    device, rule = cdi_rules.oci_device(node, 0, 0)
    assert _open_in_container(tmp_path, device, rule, (0, 0), QEMU_UID, ["CAP_SETUID", "CAP_SETGID"]) == "api 12"
    # A pod with runAsUser, as the shipped examples.
    device, rule = cdi_rules.oci_device(node, POD_UID, POD_UID)
    assert _open_in_container(tmp_path, device, rule, (POD_UID, POD_UID), POD_UID) == "api 12"


def test_cdi_mode_without_a_file_mode_only_the_process_user_opens_it(tmp_path: Path, host_node: Path) -> None:
    node = _cdi_node(host_node, cdiFileMode=None)
    assert "fileMode" not in node
    device, rule = cdi_rules.oci_device(node, 0, 0)
    assert _open_in_container(tmp_path, device, rule, (0, 0), QEMU_UID, ["CAP_SETUID", "CAP_SETGID"]) == "Permission denied"
    device, rule = cdi_rules.oci_device(node, POD_UID, POD_UID)
    assert _open_in_container(tmp_path, device, rule, (POD_UID, POD_UID), POD_UID) == "api 12"


@pytest.mark.parametrize("ownership_from_security_context", [False, True])
def test_device_specs_take_the_hosts_mode_unless_the_runtime_gives_ownership(
        tmp_path: Path, host_node: Path, ownership_from_security_context: bool) -> None:
    [config] = config_from_mapping({"resources": [{"name": "test.kvminfo.io/kvm", "devices": ["/dev/kvm"]}]}).resources
    [spec] = DeviceSpecPolicy(config).container_response(config.groups).devices
    assert (spec.container_path, spec.host_path, spec.permissions) == ("/dev/kvm", "/dev/kvm", "rw")
    # containerd's WithDevices: oci.WithDevices stats the host path (here the 0600 host's node) for
    # type, numbers, mode, uid and gid; the ownership setting replaces uid/gid by runAsUser/runAsGroup.
    st = os.stat(host_node)
    uid = POD_UID if ownership_from_security_context else st.st_uid
    device = {"path": spec.container_path, "type": "c", "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
              "fileMode": stat.S_IMODE(st.st_mode), "uid": uid, "gid": uid if ownership_from_security_context else st.st_gid}
    rule = {"allow": True, "type": "c", "major": device["major"], "minor": device["minor"], "access": spec.permissions}
    seen = _open_in_container(tmp_path, device, rule, (POD_UID, POD_UID), POD_UID)
    assert seen == ("api 12" if ownership_from_security_context else "Permission denied")
