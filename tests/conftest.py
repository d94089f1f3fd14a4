"""Shared test infrastructure: fixture paths, the real libvirtd, a private libvirtd.

Tests run against the real /dev/kvm and the real libvirt. When something real
is missing, a test skips with the reason, except under KVMINFO_REQUIRE_REAL=1
(`make test`, CI), where the missing thing is a failure.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from apiserver_standin import ApiServerStandin

# CI (which sets CI=true) replays the same generated examples every run, so a red
# build means a regression, not an unlucky draw; local runs keep exploring.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
DOMCAPS_FIXTURES = FIXTURES / "domcaps"
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
SYSTEM_LIBVIRT_URI = "qemu:///system"
# The real data beside the repository (../shared/README.md): conformance tests read its corpus in place.
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"


NEEDS_ROOT = ("the suite opens /dev/kvm read-write, makes device nodes, runs private libvirtd daemons in "
              "mount namespaces and checks permissions as other uids")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under KVMINFO_REQUIRE_REAL=1 (make test, CI) a non-root run stops at once, in one line,
    instead of failing most tests without saying why (issue 11). Without it, tests skip or fail one by one."""
    if os.environ.get("KVMINFO_REQUIRE_REAL") == "1" and os.geteuid() != 0:
        pytest.exit(f"KVMINFO_REQUIRE_REAL=1 needs root: {NEEDS_ROOT}; run as root", returncode=2)


def require_real(reason: str) -> None:
    """Skip (developer laptop) or fail (make test / CI) when a real dependency is missing."""
    if os.environ.get("KVMINFO_REQUIRE_REAL") == "1":
        pytest.fail(f"KVMINFO_REQUIRE_REAL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_corpus(folder: str) -> Path:
    """CORPUS / folder, for a conformance test that reads the recorded corpus in place.

    Every development machine and CI have ../shared beside the repository; a clone elsewhere does
    not, so there the test skips naming the first missing folder (one line for all of them). When CI
    is set a missing corpus is a failure: a broken CI layout must not go green by skipping."""
    path = CORPUS / folder
    if not path.is_dir():
        missing = next(p for p in (SHARED, CORPUS, path) if not p.is_dir())
        reason = f"{missing} is missing (the corpus tests read ../shared/corpus beside the repository)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "corpus(folder): reads ../shared/corpus/<folder> (require_corpus)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked corpus("domcaps") need that corpus folder: checked before anything else,
    so an empty parametrization (no files found) fails under CI instead of skipping."""
    for mark in item.iter_markers("corpus"):
        require_corpus(*mark.args)


def libvirt_answers(uri: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Ask with virsh in a subprocess: a hung daemon cannot hang the test session."""
    if shutil.which("virsh") is None:
        return False, "virsh not installed (libvirt-clients)"
    try:
        done = subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"libvirt at {uri} did not answer within {timeout_s:g}s"
    if done.returncode != 0:
        return False, " ".join(done.stderr.split()) or f"virsh exited {done.returncode}"
    return True, ""


KVM_CHECK_EXTENSION = 0xAE03  # _IO(KVMIO=0xAE, 0x03), linux/kvm.h
KVM_CAP_HYPERV = 44  # linux/kvm.h


def kvm_check_extension(cap: int, device: str = "/dev/kvm") -> int:
    """The running kernel's own answer for one capability, asked here with fcntl rather than through
    kvminfo: tests derive host-dependent expectations from it, never from a recording (issue 17)."""
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, KVM_CHECK_EXTENSION, cap)
    finally:
        os.close(fd)


def virsh(uri: str, *args: str) -> str:
    """stdout of `virsh -c uri ARGS`: the same daemon through another client than libvirt-python."""
    done = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def daemon_versions(uri: str) -> tuple[str, str]:
    """(libvirt daemon version, QEMU version) as virsh reports them: tests compute version-dependent
    expectations from these, never from one machine's recording (issue 17)."""
    out = virsh(uri, "version", "--daemon")
    daemon = re.search(r"^Running against daemon: (\d+\.\d+\.\d+)$", out, re.M)
    qemu = re.search(r"^Running hypervisor: QEMU (\d+\.\d+\.\d+)$", out, re.M)
    assert daemon and qemu, out
    return daemon.group(1), qemu.group(1)


@pytest.fixture(scope="session")
def libvirt_uri() -> str:
    """The shared system libvirtd (qemu:///system), brought up if it is down. Never stop it in a test."""
    ok, why = libvirt_answers(SYSTEM_LIBVIRT_URI)
    if not ok:
        subprocess.run(["bash", str(REPO / "scripts" / "libvirt-up.sh")], capture_output=True, timeout=120)
        ok, why = libvirt_answers(SYSTEM_LIBVIRT_URI)
    if not ok:
        require_real(f"libvirt on {SYSTEM_LIBVIRT_URI} is unavailable: {why}")
    return SYSTEM_LIBVIRT_URI


@dataclass
class PrivateLibvirtd:
    """A libvirtd of the test's own, safe to SIGSTOP or kill."""

    uri: str
    pid: int
    directory: Path

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def alive(self) -> bool:
        """Running or stopped; a zombie counts as dead (PID 1 here reaps orphans only every ~2 s)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"

    def kill(self) -> None:
        """SIGKILL, as a crash would; its state lives in its own tmpfs mounts, so nothing is left behind."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)


# Why a mount namespace: libvirtd's drivers lock pid files under /run/libvirt
# and keep state in /var/lib/libvirt, so a second daemon conflicts with the
# shared one. Private tmpfs mounts there (visible only to this daemon) plus its
# own socket directory make it independent; a copy of the QEMU capabilities
# cache keeps its first domcapabilities call at ~20 ms instead of ~4 s.
_START_PRIVATE = """
set -e
mount -t tmpfs kvminfo-test /run/libvirt
mount -t tmpfs kvminfo-test /var/lib/libvirt
mkdir -p "$DIR/cache"
cp -a /var/cache/libvirt/. "$DIR/cache/" 2>/dev/null || true
mount --bind "$DIR/cache" /var/cache/libvirt
exec libvirtd -d -f "$DIR/libvirtd.conf" -p "$DIR/libvirtd.pid"
"""


def _start_private_libvirtd(directory: Path) -> PrivateLibvirtd:
    if os.geteuid() != 0:
        raise RuntimeError("a private libvirtd needs root (mount namespace)")
    for tool in ("libvirtd", "unshare", "virsh"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not installed")
    (directory / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{directory}"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        f'log_outputs = "3:file:{directory}/libvirtd.log"\n'
    )
    # libvirt-up.sh --exec: the private qemu.conf (and libvirt-qemu user) our libvirtd runs with, /etc untouched
    started = subprocess.run(["bash", str(REPO / "scripts" / "libvirt-up.sh"), "--exec", "sh", "-c", _START_PRIVATE],
                             env={**os.environ, "DIR": str(directory)}, capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        raise RuntimeError(f"private libvirtd did not start: {' '.join(started.stderr.split())}")
    uri = f"qemu+unix:///system?socket={directory}/libvirt-sock"
    deadline = time.monotonic() + 10.0
    pid_file = directory / "libvirtd.pid"
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text().strip() and libvirt_answers(uri, timeout_s=5.0)[0]:
            return PrivateLibvirtd(uri=uri, pid=int(pid_file.read_text()), directory=directory)
        time.sleep(0.05)
    log_file = directory / "libvirtd.log"
    tail = log_file.read_text().splitlines()[-1:] if log_file.exists() else []
    raise RuntimeError(f"private libvirtd did not answer within 10s: {' '.join(tail)}")


@pytest.fixture
def private_libvirtd() -> Iterator[PrivateLibvirtd]:
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-lv.", dir="/tmp"))
    daemon = None
    try:
        try:
            daemon = _start_private_libvirtd(directory)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            require_real(f"cannot run a private libvirtd: {err}")
        yield daemon
    finally:
        if daemon is not None:
            daemon.kill()  # SIGTERM would take libvirtd ~1.5 s to shut down
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def standin() -> Iterator[ApiServerStandin]:
    """A running API server stand-in (tests/apiserver_standin.py) for one test."""
    from apiserver_standin import ApiServerStandin

    server = ApiServerStandin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(standin: ApiServerStandin, tmp_path: Path) -> Path:
    """A kubeconfig file that points at ``standin``."""
    return standin.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def plugin_dir() -> Iterator[Path]:
    """A kubelet device plugin directory for one test.

    Not under tmp_path: pytest's paths push unix socket paths past the 107-byte limit."""
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-dp-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A real character device node (a clone of /dev/null) in a directory of its own."""
    devdir = tmp_path / "dev"
    devdir.mkdir()
    node = devdir / "testdev"
    os.mknod(node, 0o600 | 0o020000, os.stat("/dev/null").st_rdev)  # S_IFCHR
    return node
