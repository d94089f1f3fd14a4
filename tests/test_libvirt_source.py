"""probe_libvirt against the real libvirt: the shared daemon, and a private one we may stop or kill."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from conftest import DOMCAPS_FIXTURES, REPO, PrivateLibvirtd, daemon_versions, virsh

from kvminfo.common.errors import KvminfoError
from kvminfo.model import Status
from kvminfo.sources.domcaps import parse_domcaps
from kvminfo.sources.libvirt import probe_libvirt

THIS_HOST_KVM = DOMCAPS_FIXTURES / "this-host-kvm.xml"  # a recording replayed explicitly, never expected live
PYTHON = str(REPO / ".venv" / "bin" / "python")
# A hung call must come back within the deadline plus this much.
MARGIN_S = 10.0  # a hang detector, not a timing figure: the paused daemon never answers


# libvirt's whole <hyperv> vocabulary (shared/corpus/domcaps/FACTS.md 10: every value any recorded host lists).
HYPERV_VOCABULARY = {"relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "vendor_id",
                     "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs", "avic", "emsr_bitmap", "xmm_input"}


def assert_probe_reads_what_virsh_reads(uri: str) -> None:
    """The probe (libvirt-python) reads what `virsh domcapabilities` reads from the same daemon. No recording:
    the CPU vendor, host model, QEMU machine type and Hyper-V list are the machine's own (issue 17)."""
    result = probe_libvirt(uri, deadline_s=30.0)
    assert result.status is Status.OK, result.reason
    assert result.facts.domcaps == parse_domcaps(virsh(uri, "domcapabilities", "--virttype", "kvm"))
    assert set(result.facts.domcaps.hyperv) <= HYPERV_VOCABULARY
    assert result.facts.uri == uri
    assert (result.facts.libvirt_version, result.facts.qemu_version) == daemon_versions(uri)


def test_live_libvirt_matches_virsh_on_the_same_daemon(libvirt_uri: str) -> None:
    assert_probe_reads_what_virsh_reads(libvirt_uri)


def test_socket_missing_is_unavailable_with_libvirts_message_and_nothing_on_stderr(
        tmp_path, capfd: pytest.CaptureFixture[str]) -> None:
    socket = tmp_path / "no-such-sock"
    uri = f"qemu+unix:///system?socket={socket}"
    result = probe_libvirt(uri, deadline_s=5.0)
    assert result.status is Status.UNAVAILABLE
    assert result.reason.startswith(f"libvirt at {uri}: ")  # which libvirt, not only what it said
    assert str(socket) in result.reason and "No such file or directory" in result.reason
    assert "\n" not in result.reason
    assert capfd.readouterr().err == ""  # libvirt's default handler would print here


def test_unknown_driver_is_unavailable() -> None:
    result = probe_libvirt("nosuchdriver:///system", deadline_s=5.0)
    assert result.status is Status.UNAVAILABLE
    assert result.reason


def test_private_daemon_answers(private_libvirtd: PrivateLibvirtd) -> None:
    assert_probe_reads_what_virsh_reads(private_libvirtd.uri)


def test_stopped_daemon_times_out_within_the_deadline_then_recovers(private_libvirtd: PrivateLibvirtd) -> None:
    private_libvirtd.pause()
    started = time.monotonic()
    result = probe_libvirt(private_libvirtd.uri, deadline_s=1.0)
    elapsed = time.monotonic() - started
    assert result.status is Status.TIMEOUT
    assert result.reason == f"libvirt at {private_libvirtd.uri} did not answer within 1s"
    assert 1.0 <= elapsed < 1.0 + MARGIN_S

    # Still hung: no second thread is parked on it; the answer is immediate.
    started = time.monotonic()
    again = probe_libvirt(private_libvirtd.uri, deadline_s=1.0)
    assert again.status is Status.TIMEOUT and "earlier call" in again.reason
    assert time.monotonic() - started < 1.0  # answered before its own deadline could pass: it did not wait

    private_libvirtd.resume()
    deadline = time.monotonic() + 10.0
    while (result := probe_libvirt(private_libvirtd.uri, deadline_s=5.0)).status is not Status.OK:
        assert time.monotonic() < deadline, f"libvirt did not recover after SIGCONT: {result.reason}"
        time.sleep(0.05)


def test_killed_daemon_is_unavailable(private_libvirtd: PrivateLibvirtd) -> None:
    assert probe_libvirt(private_libvirtd.uri, deadline_s=30.0).status is Status.OK
    private_libvirtd.kill()
    result = probe_libvirt(private_libvirtd.uri, deadline_s=5.0)
    assert result.status is Status.UNAVAILABLE
    assert result.reason.startswith(f"libvirt at {private_libvirtd.uri}: ")
    # libvirt's own words; which ones depends on how far the daemon's exit got
    # ("Failed to connect socket ...: Connection refused" or "Cannot recv data: ...").
    assert re.search(r"Failed to connect socket|Cannot recv data|Connection", result.reason), result.reason
    assert "\n" not in result.reason


def test_replay_file_needs_no_libvirt() -> None:
    result = probe_libvirt("nosuchdriver:///system", deadline_s=0.1, domcaps_xml=str(THIS_HOST_KVM))
    assert result.status is Status.OK
    assert result.facts.replayed_from == str(THIS_HOST_KVM)
    assert result.facts.uri is None and result.facts.libvirt_version is None
    assert result.facts.domcaps == parse_domcaps(THIS_HOST_KVM.read_text())


def test_replay_file_missing_is_an_operator_error(tmp_path) -> None:
    missing = tmp_path / "gone.xml"
    with pytest.raises(KvminfoError, match=rf"^{re.escape(str(missing))}: cannot read domain capabilities: "
                                           r"No such file or directory$"):
        probe_libvirt("qemu:///system", 1.0, domcaps_xml=str(missing))


def test_replay_file_truncated_is_an_operator_error_naming_it(tmp_path) -> None:
    cut = tmp_path / "cut.xml"
    cut.write_text(THIS_HOST_KVM.read_text()[:3000])
    with pytest.raises(KvminfoError, match=rf"^{re.escape(str(cut))}: not valid domain capabilities XML: "):
        probe_libvirt("qemu:///system", 1.0, domcaps_xml=str(cut))


def test_replay_file_larger_than_the_cap_is_refused_unread(tmp_path) -> None:
    huge = tmp_path / "huge.xml"
    with huge.open("wb") as f:  # sparse: 4 MiB + 1 byte of zeros, no disk used
        f.truncate(4 * 1024 * 1024 + 1)
    with pytest.raises(KvminfoError, match=rf"^{re.escape(str(huge))}: domain capabilities larger than 4 MiB"):
        probe_libvirt("qemu:///system", 1.0, domcaps_xml=str(huge))


def run_python(code: str) -> str:
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_libvirt_python_missing_is_unavailable() -> None:
    # A None entry in sys.modules makes `import libvirt` raise ImportError, as on a node without it.
    out = run_python("import sys; sys.modules['libvirt'] = None\n"
                     "from kvminfo.sources.libvirt import probe_libvirt\n"
                     "r = probe_libvirt('qemu:///system', 1.0); print(r.status.value, '|', r.reason)")
    assert out == "unavailable | libvirt at qemu:///system: libvirt-python not installed"


def test_garbage_from_libvirt_is_an_error_not_a_crash(libvirt_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Injected at the lowest layer: the XML the real connection hands back.
    import libvirt

    monkeypatch.setattr(libvirt.virConnect, "getDomainCapabilities",
                        lambda self, *args: THIS_HOST_KVM.read_text()[:200])
    result = probe_libvirt(libvirt_uri, deadline_s=30.0)
    assert result.status is Status.ERROR
    assert result.reason.startswith(f"libvirt at {libvirt_uri}: not valid domain capabilities XML: ")
    assert result.facts.libvirt_version  # what it did learn is kept


def test_unexpected_exception_in_the_worker_is_an_error(libvirt_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import libvirt

    def explode(self, *args):
        raise MemoryError("injected")

    monkeypatch.setattr(libvirt.virConnect, "getDomainCapabilities", explode)
    result = probe_libvirt(libvirt_uri, deadline_s=30.0)
    assert result.status is Status.ERROR
    assert result.reason == "internal error: MemoryError: injected"
