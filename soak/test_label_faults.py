"""Labelling under faults: libvirt hung or killed, a feature file raced by readers, odd /dev/kvm hosts.

Real processes throughout: the `kvminfo` console script, a private libvirtd
(tests/conftest.py) that is SIGSTOPped or killed, the real /dev/kvm, device
nodes made with mknod. Only ioctl errors are injected, at the ioctl layer.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DOMCAPS_FIXTURES
from other_user import as_user
from test_hooks import whitelist_for_this_host

from kvminfo.output.featurefile import parse_feature_file
from kvminfo.sources.kernel_whitelist import read_os_id
from soak.feature_writer import LABEL_SETS
from soak.harness import KVMINFO, REPO, Stopwatch, kvminfo, label_lines, scaled
from soak.nfd_rules import assert_nfd_accepts

FAMILY = "Labelling"
DEADLINE_S = 1.0
# kvminfo's own deadline is --libvirt-timeout (one thread, one deadline); a process start on top.
WITHIN_S = DEADLINE_S + 1.0 + 1.5
REPLAY = DOMCAPS_FIXTURES / "this-host-kvm.xml"


def _labels_despite_libvirt(uri: str, says: str) -> tuple[bool, float, str]:
    with Stopwatch() as sw:
        done = kvminfo("labels", "--libvirt-uri", uri, "--libvirt-timeout", f"{DEADLINE_S:g}", timeout=30)
    labels = label_lines(done.stdout)
    problems = [why for bad, why in [
        (done.returncode != 0, f"exit {done.returncode}"),
        ("Traceback" in done.stderr, "traceback"),
        (labels.get("feature.node.kubernetes.io/kvm-info-usable") != "true", "no kvm-info-usable=true"),
        (says not in done.stderr, f"stderr does not say {says!r}: {done.stderr.strip()!r}"),
        (sw.elapsed > WITHIN_S, f"took {sw.elapsed:.2f}s"),
    ] if bad]
    if not problems:
        assert_nfd_accepts(labels)
    return not problems, sw.elapsed, "; ".join(problems)


def test_libvirt_hung_then_killed(private_libvirtd, scenario) -> None:
    hung = scenario(FAMILY, "libvirt hangs (SIGSTOP)", "`kvminfo labels` wall time, deadline 1 s")
    killed = scenario(FAMILY, "libvirt killed", "`kvminfo labels` wall time, deadline 1 s")
    runs = scaled(3, 20)
    private_libvirtd.pause()
    try:
        for _ in range(runs):
            hung.record(*_labels_despite_libvirt(private_libvirtd.uri, "timed out"))
    finally:
        private_libvirtd.resume()
    private_libvirtd.kill()
    for _ in range(runs):
        killed.record(*_labels_despite_libvirt(private_libvirtd.uri, "libvirt unavailable"))
    hung.check(runs)
    killed.check(runs)


def _read_whole(path: Path) -> tuple[str, float]:
    with Stopwatch() as sw:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    return text, sw.elapsed


MIN_CHANGES = 20


def test_feature_file_raced_by_readers(short_tmp: Path, scenario) -> None:
    reads = scenario(FAMILY, "Feature file: reads during rewrites", "one read of the file")
    out = short_tmp / "kvminfo"
    writer = subprocess.Popen([sys.executable, "-m", "soak.feature_writer", str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        seen_sets, changes, last = set(), 0, None
        target, give_up_at = scaled(2000, 10000), time.monotonic() + 60
        # At least `target` reads, and on until the readers have seen 20 rewrites (a slow disk's fsync
        # makes rewrites rarer than reads), so the race is real however fast the disk is.
        while reads.runs < target or (changes <= MIN_CHANGES and time.monotonic() < give_up_at):
            text, took = _read_whole(out)
            parsed = parse_feature_file(text)
            match = next((i for i, s in enumerate(LABEL_SETS) if s == parsed.labels), None)
            held = bool(text) and text.endswith("\n") and parsed.expires_at is not None and match is not None
            reads.record(held, took, f"partial or empty read ({len(text)} bytes)")
            seen_sets.add(match)
            changes += match != last
            last = match
        writer.send_signal(signal.SIGTERM)
        writes = int(writer.communicate(timeout=5)[0].strip())
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0
    # The race was real: the writer kept replacing the file while we read it.
    reads.notes = f"{writes} rewrites; the readers saw the content change {changes} times"
    assert changes > MIN_CHANGES and seen_sets >= {0, 1, 2}, (changes, seen_sets, writes)
    assert sorted(p.name for p in short_tmp.iterdir()) == ["kvminfo"]
    reads.check()


def test_no_temp_file_after_sigterm(short_tmp: Path, scenario) -> None:
    """SIGTERM at a random moment of a rewrite loop (writer) and of the real sidecar."""
    stops = scenario(FAMILY, "Feature file: SIGTERM leaves no temp file", "SIGTERM to exit")
    rng = random.Random(5)
    for round_ in range(scaled(10, 50)):
        out = short_tmp / f"round-{round_}" / "kvminfo"
        out.parent.mkdir()
        if round_ % 5 == 4:  # every fifth round: the real `kvminfo features-file` sidecar
            process = subprocess.Popen([str(REPO / ".venv/bin/kvminfo"), "features-file", "-o", str(out),
                                        "--interval", "1s", "--libvirt-timeout", "1", "--expiry", "6s", "--no-kvm",
                                        "--domcaps-xml", str(REPLAY)], stderr=subprocess.DEVNULL)
            while not out.exists() and process.poll() is None:
                time.sleep(0.01)
            # The shortest expiry it accepts here (2 x (1 s + 2 s deadline)) is also its rewrite threshold:
            # it rewrites every second, so the signal can land anywhere in a round.
            time.sleep(rng.uniform(0.0, 2.5))
        else:
            process = subprocess.Popen([sys.executable, "-m", "soak.feature_writer", str(out)], cwd=REPO,
                                       stdout=subprocess.PIPE, text=True)
            process.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.3))
        with Stopwatch() as sw:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
        if process.stdout:
            process.stdout.close()
        entries = sorted(p.name for p in out.parent.iterdir())
        whole = parse_feature_file(out.read_text()).expires_at is not None if out.exists() else False
        stops.record(code == 0 and entries == ["kvminfo"] and whole, sw.elapsed,
                     f"exit {code}, entries {entries}, whole file: {whole}")
    stops.check()


# ---- odd hosts ---------------------------------------------------------------------------------------------

def _odd_device(kind: str, directory: Path) -> Path:
    path = directory / f"kvm-{kind}"
    if kind == "regular-file":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind in ("not-kvm-char", "eacces"):
        major, minor = (1, 3) if kind == "not-kvm-char" else (10, 232)  # /dev/null, /dev/kvm
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(major, minor))
    return path  # "missing": never created


ODD_DEVICES = {  # kind -> what stderr must say about the kvm source
    "missing": "no such device",
    "regular-file": "not a character device",
    "directory": "not a character device",
    "not-kvm-char": "not a KVM device",
    "eacces": "permission denied",
}
IOCTL_FAULTS = {  # (errno, request, mode) -> what stderr must say; None: the retry hides it, KVM stays usable
    ("EINTR", "KVM_CHECK_EXTENSION", "once"): None,
    ("EINTR", "KVM_GET_MSR_INDEX_LIST", "once"): None,
    ("EINTR", "KVM_GET_API_VERSION", "always"): "Interrupted system call",
    ("EINTR", "KVM_CHECK_EXTENSION", "always"): "Interrupted system call",  # after 3 retries
    ("EIO", "KVM_GET_API_VERSION", "always"): "Input/output error",
    ("EIO", "KVM_CHECK_EXTENSION", "always"): "Input/output error",
    ("EIO", "KVM_GET_MSR_INDEX_LIST", "always"): "Input/output error",
}


def _judge_odd_host(done: subprocess.CompletedProcess[str], says: str | None) -> tuple[bool, str]:
    labels = label_lines(done.stdout)
    stderr_lines = done.stderr.strip().splitlines()
    kvm_usable = labels.get("feature.node.kubernetes.io/kvm-info-usable") == "true"
    problems = [why for bad, why in [
        (done.returncode != 0, f"exit {done.returncode}"),
        ("Traceback" in done.stderr, "traceback"),
        (labels.get("feature.node.kubernetes.io/kvm-info-version-hyperv") != "true", "no label from the kernel whitelist"),
        (says is None and (not kvm_usable or stderr_lines), f"KVM not usable after a retried EINTR: {stderr_lines}"),
        (says is not None and kvm_usable, "kvm-info-usable despite a broken device"),
        (says is not None and not (len(stderr_lines) == 1 and "kvm" in stderr_lines[0] and says in stderr_lines[0]),
         f"stderr is not one line naming kvm and {says!r}: {stderr_lines}"),
    ] if bad]
    if not problems:
        assert_nfd_accepts(labels)
    return not problems, "; ".join(problems)


@pytest.fixture
def host_whitelist(short_tmp: Path) -> Path:
    return whitelist_for_this_host(short_tmp, read_os_id("/etc/os-release"))


def test_odd_kvm_devices(short_tmp: Path, host_whitelist: Path, scenario) -> None:
    odd = scenario(FAMILY, "Odd hosts: /dev/kvm missing, not char, not KVM, EACCES", "`kvminfo labels` wall time")
    short_tmp.chmod(0o755)  # the EACCES run is an unprivileged user: it must reach the files, not the device
    host_whitelist.chmod(0o644)
    for _ in range(scaled(1, 10)):
        for kind, says in ODD_DEVICES.items():
            device = _odd_device(kind, short_tmp)
            command = [str(KVMINFO), "labels", "--kvm-device", str(device),
                       "--domcaps-xml", str(REPLAY), "--whitelist-config", str(host_whitelist)]
            if kind == "eacces":  # as nobody, with a checkout under /root (0700) still reachable
                command = as_user(65534, 65534, command)
            with Stopwatch() as sw:
                done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            held, why = _judge_odd_host(done, says)
            odd.record(held, sw.elapsed, f"{kind}: {why}")
            if device.is_dir():
                device.rmdir()
            elif os.path.lexists(device):
                device.unlink()
    odd.check(len(ODD_DEVICES))


def test_failing_ioctls(host_whitelist: Path, scenario) -> None:
    faults = scenario(FAMILY, "Odd hosts: ioctl EINTR / EIO", "`kvminfo labels` wall time")
    for _ in range(scaled(1, 10)):
        for (error, request, mode), says in IOCTL_FAULTS.items():
            with Stopwatch() as sw:
                done = subprocess.run(
                    [sys.executable, "-m", "soak.ioctl_faults", error, request, mode, "--", "labels",
                     "--domcaps-xml", str(REPLAY), "--whitelist-config", str(host_whitelist)],
                    cwd=REPO, capture_output=True, text=True, timeout=60)
            held, why = _judge_odd_host(done, says)
            faults.record(held, sw.elapsed, f"{error} on {request} ({mode}): {why}")
    faults.check(len(IOCTL_FAULTS))
