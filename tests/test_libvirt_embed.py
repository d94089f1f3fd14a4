"""libvirt's embedded QEMU driver (qemu:///embed?root=DIR), what the labeller pods use:
kvminfo's answer through it is libvirt's own, as `virsh -c 'qemu:///embed?root=DIR'
domcapabilities --virttype kvm` gives it (virsh runs its own event loop), read here
with ElementTree (libvirt's formatdomaincaps.rst), never with kvminfo's parser.

As root, Debian's QEMU driver resolves its default user `libvirt-qemu` before it reads
qemu.conf (libvirt src/qemu/qemu_conf.c virQEMUDriverConfigNew): the image creates
that record (Dockerfile), a test here puts one in a private mount namespace's
/etc/passwd (the host's is never touched). As another uid the driver is
unprivileged: the pod's uid 65532 runs it with /dev/kvm opened as a 0666 node gives
it (a systemd host's mode), bound over /dev/kvm in that namespace only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import KVMINFO, require_real
from other_user import needed_paths, reach_script

from kvminfo.sources.libvirt_embed import ROOT_QEMU_CONF, embedded_root

POD_UID = 65532
# Cold: libvirt probes QEMU (about 8 s here); the runner's default 10 s is too tight on a loaded machine.
TIMEOUT = "120"


@pytest.fixture
def short_dir():
    """A directory for the embedded root with a short path: QEMU's QMP socket lives at
    DIR/lib/qemu/qmp-XXXXXX/qmp.monitor, and a unix socket path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="kvminfo-embed."))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def needs_embed() -> None:
    if os.geteuid() != 0:
        require_real("the embedded-driver tests run libvirt in private mount namespaces (root)")
    for tool in ("virsh", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            require_real(f"{tool} not installed")
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so") \
            and not list(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so")):
        require_real("libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)")
    if not os.path.exists("/dev/kvm"):
        require_real("no /dev/kvm")


def namespace(tmp_path: Path, argv: list[str], uid: int = 0, reach: Path | None = None,
              env: tuple[str, ...] = ()) -> list[str]:
    """``argv`` in a private mount namespace whose /etc/passwd and /etc/group add Debian's
    libvirt-qemu records, as root or (uid) as the pod's uid with a 0666 /dev/kvm and
    ``reach`` (the embedded root's directory) reachable."""
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(Path("/etc/passwd").read_text()
                      + "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n")
    group.write_text(Path("/etc/group").read_text() + "libvirt-qemu:x:64055:\n")
    script = f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
    if uid:
        node = tmp_path / "kvm-0666"
        if not node.exists():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.stat("/dev/kvm").st_rdev)
            node.chmod(0o666)
        script += f"mount --bind {node} /dev/kvm && " + reach_script((*needed_paths(), reach or tmp_path))
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", "-u", "XDG_RUNTIME_DIR",
                "HOME=/nonexistent", *env, *argv]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script + shlex.join(argv)]


def kvminfo_facts(tmp_path: Path, root: Path, uid: int = 0) -> dict:
    done = subprocess.run(namespace(tmp_path, [str(KVMINFO), "probe", "--json", "--no-kvm", "--family", "cpu-models",
                                               "--libvirt-uri", f"qemu:///embed?root={root}",
                                               "--libvirt-timeout", TIMEOUT], uid, root.parent),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (source,) = [s for s in json.loads(done.stdout)["sources"] if s["name"] == "libvirt"]
    assert source["status"] == "ok", source["reason"]
    return source["facts"]


def virsh_domcaps(tmp_path: Path, root: Path, uid: int = 0) -> ET.Element:
    # virsh as another uid needs a writable XDG_RUNTIME_DIR too: the one kvminfo chose
    done = subprocess.run(namespace(tmp_path, ["virsh", "-c", f"qemu:///embed?root={root}", "domcapabilities",
                                               "--virttype", "kvm"], uid, root.parent,
                                    (f"XDG_RUNTIME_DIR={root}/run",)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return ET.fromstring(done.stdout)


def assert_same_answer(facts: dict, xml: ET.Element) -> None:
    """formatdomaincaps.rst: <domain>, <machine>, <vcpu max>, the host-model and custom CPU modes."""
    assert facts["domain_type"] == xml.findtext("domain") == "kvm"
    assert facts["machine"] == xml.findtext("machine")
    assert facts["emulator"] == xml.findtext("path")
    assert facts["max_vcpus"] == int(xml.find("vcpu").get("max"))
    host_model = xml.find("cpu/mode[@name='host-model']/model")
    assert facts["host_model"]["model"] == host_model.text
    models = [(m.text, m.get("usable")) for m in xml.findall("cpu/mode[@name='custom']/model")]
    assert models and [(m["name"], m["usable"]) for m in facts["cpu_models"]] == models


def test_the_embedded_driver_as_root_answers_what_virsh_embedded_answers(needs_embed, tmp_path, short_dir):
    root = short_dir / "root"
    facts = kvminfo_facts(tmp_path, root)  # cold: kvminfo sets up the root (qemu.conf) and probes QEMU
    assert (root / "etc" / "qemu.conf").read_text() == ROOT_QEMU_CONF
    assert list((root / "cache" / "qemu" / "capabilities").glob("*.xml"))  # the probe is cached in the root
    assert_same_answer(facts, virsh_domcaps(tmp_path, root))  # virsh reads the same root, warm


def test_the_embedded_driver_as_the_pods_uid_needs_no_home_and_no_qemu_conf(needs_embed, tmp_path, short_dir):
    root = short_dir / "root"  # the pod's volume: the uid's own directory (mkdtemp's is 0700)
    os.chown(short_dir, POD_UID, POD_UID)
    facts = kvminfo_facts(tmp_path, root, POD_UID)
    assert not (root / "etc" / "qemu.conf").exists()  # unprivileged: QEMU runs as the caller, nothing to say
    assert (root / "run" / "libvirt").is_dir()  # XDG_RUNTIME_DIR was unset: kvminfo pointed it into the root
    assert_same_answer(facts, virsh_domcaps(tmp_path, root, POD_UID))


def test_an_operators_qemu_conf_in_the_root_is_kept(needs_embed, tmp_path, short_dir):
    root = short_dir / "root"
    (root / "etc").mkdir(parents=True)
    own = '# the operator\'s\nuser = "root"\ngroup = "root"\nmax_core = 0\n'
    (root / "etc" / "qemu.conf").write_text(own)
    kvminfo_facts(tmp_path, root)
    assert (root / "etc" / "qemu.conf").read_text() == own


@pytest.mark.parametrize("uri, root", [
    ("qemu:///embed?root=/var/cache/kvminfo/libvirt", "/var/cache/kvminfo/libvirt"),
    ("qemu:///embed?root=/a%20b", "/a b"),
    ("qemu:///embed", None),  # libvirt itself says what is missing
    ("qemu:///system", None),
    ("qemu+unix:///embed?root=/x", None),
    ("test:///embed?root=/x", None),
])
def test_which_uris_are_embedded(uri, root):
    assert embedded_root(uri) == root
