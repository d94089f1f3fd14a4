"""`kvminfo features-file`: the real console script in subprocesses, plus its pure parts."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import DOMCAPS_FIXTURES, KVMINFO, PrivateLibvirtd, require_real
from hypothesis import given
from hypothesis import strategies as st
from other_user import as_user, unreadable_checkout
from signal_ready import wait_until_catching

from kvminfo.collect import probe_deadline_s
from kvminfo.common.atomic import temp_path_for, write_atomic
from kvminfo.common.durations import DurationError, format_duration, parse_duration
from kvminfo.common.errors import KvminfoError
from kvminfo.labels.nfd import check_label
from kvminfo.model import ProbeOptions
from kvminfo.output.featurefile import MAX_BYTES, FeatureFile, parse_feature_file, render_feature_file
from kvminfo.output.featurefile_writer import Schedule, rewrite_reason, schedule_from_args
from kvminfo.sources.base import LOCAL_SOURCE_DEADLINE_S

THIS_HOST_KVM = DOMCAPS_FIXTURES / "this-host-kvm.xml"
VIRT_MANAGER = DOMCAPS_FIXTURES / "virt-manager-kvm-x86_64-latest.xml"
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def kvminfo(*args: str, timeout: float = 60, user: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(KVMINFO), *args]
    if user is not None:  # run as an unprivileged user: root may write anywhere
        command = as_user(user, user, command)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def assert_one_clean_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def only_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- durations -----------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1d", 86400), ("2h0m5s", 7205), (" 5m ", 300),
    # one syntax for every time option (issue 11): a bare number is seconds, fractions are allowed
    ("10", 10), ("60", 60), ("2.5", 2.5), ("1.5h", 5400), ("0.5s", 0.5),
])
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "m", "-5m", "30m1h", "0s", "0", "1h 30m", "1e3", "inf", "1.s", ".5"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(DurationError, match=r"^--expiry: "):
        parse_duration(text, "--expiry")


def test_format_duration_is_the_inverse() -> None:
    for seconds in (1, 59, 90, 3600, 5400, 86400 + 61):
        assert parse_duration(format_duration(seconds)) == seconds


def test_expiry_must_outlast_two_rounds() -> None:
    # A round is the interval plus the probe's deadline (libvirt may take that long):
    # expiry 1h with interval 59m59s and a 11 s probe used to lapse before the next write.
    with pytest.raises(KvminfoError, match=r"^--expiry 1h is too short for --interval 59m59s: at least 2h20s "
                                           r"\(2 x \(interval \+ 11s probe deadline\)\)"):
        schedule_from_args("1h", "59m59s", probe_deadline_s=11.0)
    with pytest.raises(KvminfoError, match="--expiry 2m is too short for --interval 1m: at least 2m2s"):
        schedule_from_args("2m", "1m", probe_deadline_s=1.0)
    assert schedule_from_args("2m2s", "1m", probe_deadline_s=1.0).expiry_s == 122  # the bound itself is fine
    assert schedule_from_args("1m", None, probe_deadline_s=11.0).expiry_s == 60  # one-shot: nothing to outlast


def test_default_expiry_is_1h_or_3_intervals_and_never_below_two_rounds() -> None:
    assert schedule_from_args(None, None, probe_deadline_s=11.0) == Schedule(3600, None, 11.0)
    assert schedule_from_args(None, "10m", probe_deadline_s=11.0).expiry_s == 3600
    assert schedule_from_args(None, "2h", probe_deadline_s=11.0).expiry_s == 6 * 3600
    # --libvirt-timeout 3600 with --interval 30m: 3 intervals (1h30m) would lapse; two rounds do not.
    assert schedule_from_args(None, "30m", probe_deadline_s=3601.0).expiry_s == 2 * (1800 + 3601)


def test_the_probe_deadline_is_the_slowest_enabled_source() -> None:
    assert probe_deadline_s(ProbeOptions(use_libvirt=False)) == LOCAL_SOURCE_DEADLINE_S
    assert probe_deadline_s(ProbeOptions(libvirt_deadline_s=30.0)) == 30.0  # one deadline: the libvirt call's own
    assert probe_deadline_s(ProbeOptions(use_kvm=False, use_libvirt=False)) == 0.0


# --- render / parse / rewrite decision -------------------------------------------

def test_render_then_parse_round_trips_and_sorts() -> None:
    labels = {"feature.node.kubernetes.io/kvm-info-usable": "true", "feature.node.kubernetes.io/kvm-info-cpu-vendor": "AMD",
              "a.example.com/x": ""}
    data = render_feature_file(labels, NOW + timedelta(hours=1))
    text = data.decode()
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["a.example.com/x=", "feature.node.kubernetes.io/kvm-info-cpu-vendor=AMD",
                    "feature.node.kubernetes.io/kvm-info-usable=true"]
    assert "# +expiry-time=2026-11-25T13:00:00Z\n" in text
    assert text.index("# +expiry-time=") < text.index("a.example.com/x=")  # applies to the lines after it
    parsed = parse_feature_file(text)
    assert parsed == FeatureFile(labels, NOW + timedelta(hours=1))


def test_header_comments_are_not_directives() -> None:
    text = render_feature_file({}, NOW).decode()
    directives = [line for line in text.splitlines() if line.startswith("# +")]
    assert directives == ["# +expiry-time=2026-11-25T12:00:00Z"]


def test_parse_takes_nfd_bare_keys_as_true() -> None:
    assert parse_feature_file("# c\nfoo\nbar=1\n\n").labels == {"foo": "true", "bar": "1"}


def _labels_rendering_to(size: int) -> dict[str, str]:
    """Labels whose feature file is exactly ``size`` bytes (each line padded by its value)."""
    labels: dict[str, str] = {}
    while len(render_feature_file(labels, NOW)) + 80 < size:  # "kvm-info-test-NNNNN=" + 60 x's + newline
        labels[f"kvm-info-test-{len(labels):05d}"] = "x" * 60
    short = size - len(render_feature_file(labels, NOW)) - len("kvm-info-test-last=\n")
    labels["kvm-info-test-last"] = "x" * short
    return labels


def test_too_big_for_nfd_is_refused() -> None:
    """NFD skips a file when Size() > 65536 (source/local/local.go, 0.14 to 0.19)."""
    with pytest.raises(KvminfoError, match=f"would be {MAX_BYTES + 1} bytes; NFD skips files larger than {MAX_BYTES}"):
        render_feature_file(_labels_rendering_to(MAX_BYTES + 1), NOW)


def test_exactly_the_nfd_limit_is_written() -> None:
    """Issue 9 case 10: a file of exactly 65,536 bytes is read by NFD, so it is not refused."""
    assert len(render_feature_file(_labels_rendering_to(MAX_BYTES), NOW)) == MAX_BYTES


LABELS = {"feature.node.kubernetes.io/kvm-info-usable": "true"}
HOURLY = Schedule(expiry_s=3600, interval_s=60, probe_deadline_s=0.0)


@pytest.mark.parametrize("on_disk, labels, expected", [
    (None, LABELS, "no feature file yet"),
    (FeatureFile(LABELS, NOW + timedelta(minutes=30)), LABELS, None),
    (FeatureFile(LABELS, NOW + timedelta(seconds=119)), LABELS, "expiry near (1m59s left)"),
    (FeatureFile(LABELS, NOW - timedelta(seconds=5)), LABELS, "expiry near (0s left)"),
    # Two rounds of validity count the probe's deadline too: 2 x (1m + 11s) = 2m22s.
    (FeatureFile(LABELS, NOW + timedelta(seconds=141)), LABELS, "expiry near (2m21s left)"),
    (FeatureFile(LABELS, None), LABELS, "existing file has no valid expiry directive"),
    (FeatureFile({**LABELS, "feature.node.kubernetes.io/kvm-info-nested": "true"}, NOW + timedelta(hours=1)), LABELS,
     "labels changed (-feature.node.kubernetes.io/kvm-info-nested)"),
    (FeatureFile({"feature.node.kubernetes.io/kvm-info-usable": "false", "x": "1"}, NOW + timedelta(hours=1)), {**LABELS, "y": "2"},
     "labels changed (+y; -x; ~feature.node.kubernetes.io/kvm-info-usable)"),
])
def test_rewrite_reason(on_disk: FeatureFile | None, labels: dict[str, str], expected: str | None) -> None:
    assert rewrite_reason(on_disk, labels, NOW, Schedule(3600, 60, probe_deadline_s=11.0)) == expected


FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def test_a_foreign_far_future_expiry_is_rewritten() -> None:
    """Issue 9 case 9: `# +expiry-time=2099-01-01T00:00:00Z` with the same labels was "left alone",
    so a dead sidecar could leave those labels for good."""
    assert rewrite_reason(FeatureFile(LABELS, FAR_FUTURE), LABELS, NOW, HOURLY) == (
        "expiry 2099-01-01T00:00:00Z is later than now + --expiry (2026-11-25T13:00:00Z)")
    # the expiry this sidecar itself wrote one interval ago is not "later"
    assert rewrite_reason(FeatureFile(LABELS, NOW + timedelta(hours=1)), LABELS, NOW + timedelta(minutes=1), HOURLY) is None


def test_expiry_never_writes_no_directive_and_keeps_it_that_way() -> None:
    never = Schedule(expiry_s=None, interval_s=60, probe_deadline_s=0.0)
    assert schedule_from_args("never", None, 11.0).expiry_s is None
    text = render_feature_file(LABELS, None).decode()
    assert "+expiry-time" not in text and parse_feature_file(text) == FeatureFile(LABELS, None)
    assert rewrite_reason(FeatureFile(LABELS, None), LABELS, NOW, never) is None
    assert rewrite_reason(FeatureFile(LABELS, FAR_FUTURE), LABELS, NOW, never) == (
        "existing file expires; --expiry never writes none")


def test_rewrite_ignores_the_expiry_line() -> None:
    first = parse_feature_file(render_feature_file(LABELS, NOW + timedelta(hours=1)).decode())
    # A later render has a different expiry line, but the same labels: nothing to do.
    assert render_feature_file(LABELS, NOW + timedelta(hours=2)) != render_feature_file(LABELS, NOW + timedelta(hours=1))
    assert rewrite_reason(first, LABELS, NOW + timedelta(minutes=1), HOURLY) is None


# --- atomic write ------------------------------------------------------------------

def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "kvminfo"
    target.write_text("old\n")
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new\n", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == 0o644  # the umask does not narrow it
    assert only_entries(tmp_path) == ["kvminfo"]


def test_write_atomic_failure_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "kvminfo"
    target.write_text("old\n")

    def failing_fsync(fd: int) -> None:  # the disk reports an I/O error (the lowest layer: the syscall)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(KvminfoError, match=rf"^{tmp_path}/kvminfo: cannot write: Input/output error"):
        write_atomic(target, b"data")
    monkeypatch.undo()
    assert only_entries(tmp_path) == ["kvminfo"] and target.read_text() == "old\n"


def _make_char_device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a real node with /dev/null's numbers, in tmp


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)


def _make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))  # the socket file stays after close


def _make_symlink(path: Path) -> None:
    (path.parent / "victim").write_text("precious\n")
    path.symlink_to(path.parent / "victim")


def _make_directory(path: Path) -> None:
    (path / "child").mkdir(parents=True)


NOT_REGULAR = {
    "a character device": _make_char_device,
    "a FIFO": _make_fifo,
    "a socket": _make_socket,
    "a symbolic link": _make_symlink,
    "a directory": _make_directory,
}


def _snapshot(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_rdev, st.st_ino


@pytest.mark.parametrize("kind", NOT_REGULAR)
def test_write_atomic_replaces_only_regular_files(tmp_path: Path, kind: str) -> None:
    """`features-file -o /dev/null` as root once replaced the device node with a regular file."""
    if kind == "a character device" and os.geteuid() != 0:
        pytest.skip("mknod needs root")
    target = tmp_path / "target"
    NOT_REGULAR[kind](target)
    before = _snapshot(target)
    with pytest.raises(KvminfoError, match=rf"^{target}: is {kind}, not a regular file; refusing to replace it$"):
        write_atomic(target, b"x\n")
    assert _snapshot(target) == before
    assert not temp_path_for(target).exists()


def test_write_atomic_never_follows_a_symlink_planted_at_the_temp_name(tmp_path: Path) -> None:
    # Someone who can write the directory plants .kvminfo.tmp.<pid> -> a file of theirs
    # choosing; following it would truncate and overwrite that file as root.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "kvminfo"
    temp_path_for(target).symlink_to(victim)
    write_atomic(target, b"new\n")
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_bytes() == b"new\n"
    assert only_entries(tmp_path) == ["kvminfo", "victim"]


def test_write_atomic_replaces_a_stale_temp_file(tmp_path: Path) -> None:
    # A writer killed mid-write leaves its temp file; in a container the next one has the same pid.
    target = tmp_path / "kvminfo"
    temp_path_for(target).write_text("half a fi")
    write_atomic(target, b"whole\n")
    assert target.read_bytes() == b"whole\n" and only_entries(tmp_path) == ["kvminfo"]


def test_write_atomic_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KvminfoError, match=f"directory {tmp_path}/nope does not exist"):
        write_atomic(tmp_path / "nope" / "f", b"x")


# --- the real command ----------------------------------------------------------------

def test_one_shot_writes_the_same_labels_as_kvminfo_labels(tmp_path: Path, libvirt_uri: str) -> None:
    out = tmp_path / "kvminfo"
    before = datetime.now(UTC)
    done = kvminfo("features-file", "--output", str(out), "--libvirt-uri", libvirt_uri)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "reason: one-shot" in done.stderr
    text = out.read_text()
    # The form Go's time.Parse(time.RFC3339, ...) in NFD's local source accepts.
    assert re.search(r"^# \+expiry-time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.MULTILINE)
    parsed = parse_feature_file(text)
    labels_lines = kvminfo("labels", "--libvirt-uri", libvirt_uri).stdout.splitlines()
    assert [f"{k}={v}" for k, v in sorted(parsed.labels.items())] == labels_lines
    assert parsed.labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"  # the real /dev/kvm works here
    assert not any(k.startswith("feature.node.kubernetes.io/kvm-info-cap-hyperv-") for k in parsed.labels)  # and has no Hyper-V
    assert parsed.expires_at is not None
    assert timedelta(minutes=59) < parsed.expires_at - before < timedelta(minutes=61)
    assert out.stat().st_mode & 0o777 == 0o644
    assert only_entries(tmp_path) == ["kvminfo"]


def test_expiry_option_sets_the_directive(tmp_path: Path) -> None:
    out = tmp_path / "f"
    before = datetime.now(UTC).replace(microsecond=0)
    done = kvminfo("features-file", "-o", str(out), "--expiry", "90s", "--no-libvirt")
    assert done.returncode == 0, done.stderr
    expires_at = parse_feature_file(out.read_text()).expires_at
    assert expires_at is not None
    assert timedelta(seconds=89) <= expires_at - before <= timedelta(seconds=95)


@pytest.mark.parametrize("args, fragments", [
    (["--interval", "0.5"], ["--interval: '0.5' is too short; at least 1s"]),
    # a bare number is seconds, for --interval and --expiry as for --libvirt-timeout
    (["--interval", "60", "--expiry", "100"], ["--expiry 1m40s is too short for --interval 1m: at least 2m10s"]),
    # no --expiry could outlast two rounds of this interval: say so, and what would do
    (["--interval", "200d"], ["--interval 200d is too long for a feature file: --expiry must be at least",
                              "can be at most 365d", "use --interval 182d11h59m55s or less"]),
    (["--expiry", "soon"], ["--expiry: 'soon' is not a duration"]),
    (["--expiry", "1m", "--interval", "5m"], ["--expiry 1m is too short for --interval 5m: at least 10m10s"]),
    # (these run with --no-libvirt: the probe deadline is the local sources' 5 s)
    (["--expiry", "1h", "--interval", "59m59s"], ["--expiry 1h is too short for --interval 59m59s: at least 2h8s"]),
    # Once OverflowError tracebacks (datetime + timedelta; threading.Event.wait).
    (["--expiry", "99999999999d"], ["--expiry: '99999999999d' is too long; at most 365d"]),
    (["--interval", "99999999999d"], ["--interval: '99999999999d' is too long; at most 365d"]),
])
def test_bad_durations_exit_non_zero_with_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    done = kvminfo("features-file", "-o", str(tmp_path / "f"), "--no-libvirt", *args)
    assert_one_clean_error_line(done, "kvminfo features-file: ", *fragments)
    assert only_entries(tmp_path) == []


def test_missing_directory_exits_non_zero(tmp_path: Path) -> None:
    done = kvminfo("features-file", "-o", str(tmp_path / "absent" / "f"), "--no-libvirt")
    assert_one_clean_error_line(done, f"directory {tmp_path}/absent does not exist")


def test_unwritable_directory_exits_non_zero() -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    if (why := unreadable_checkout()) is not None:
        require_real(why)
    # Our own directory straight under /tmp: nobody can reach it (pytest's base is 0700), not write it.
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-ro.", dir="/tmp"))
    try:
        directory.chmod(0o755)
        done = kvminfo("features-file", "-o", str(directory / "f"), "--no-kvm", "--no-libvirt", user=65534)
        assert_one_clean_error_line(done, f"directory {directory} is not writable")
        assert only_entries(directory) == []
    finally:
        shutil.rmtree(directory)


def test_output_behind_a_directory_the_user_cannot_search_exits_non_zero() -> None:
    """--output under a 0700 directory of another user: stat fails with EACCES, which
    Path.is_dir() does not swallow; expected one line naming --output, not a traceback."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as an unprivileged user")
    if (why := unreadable_checkout()) is not None:
        require_real(why)
    closed = Path(tempfile.mkdtemp(prefix="kvminfo-closed.", dir="/tmp"))  # mkdtemp: mode 0700, root's
    try:
        (closed / "features.d").mkdir()
        for output in (closed / "features.d" / "f", closed / "features.d"):
            done = kvminfo("features-file", "-o", str(output), "--no-kvm", "--no-libvirt", user=65534)
            assert_one_clean_error_line(done, f"--output {output}: cannot look it up: Permission denied")
        assert only_entries(closed / "features.d") == []
    finally:
        shutil.rmtree(closed)


def test_output_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    done = kvminfo("features-file", "-o", str(tmp_path), "--no-libvirt")
    assert_one_clean_error_line(done, "is a directory")


@pytest.mark.parametrize("kind", [k for k in NOT_REGULAR if k != "a directory"])
def test_output_that_is_not_a_regular_file_is_refused_before_any_write(tmp_path: Path, kind: str) -> None:
    """Issue 9 case 8: `-o /dev/null` (or `-o /dev/kvm`, a FIFO) was replaced by a regular file, exit 0."""
    if kind == "a character device" and os.geteuid() != 0:
        pytest.skip("mknod needs root")
    target = tmp_path / "target"
    NOT_REGULAR[kind](target)
    entries, before = only_entries(tmp_path), _snapshot(target)
    for args in ([], ["--interval", "1m"]):  # one-shot and sidecar alike
        done = kvminfo("features-file", "-o", str(target), "--no-libvirt", *args)
        assert_one_clean_error_line(done, f"kvminfo features-file: --output {target}: is {kind}, not a regular file")
        assert done.returncode == 2
        assert _snapshot(target) == before and only_entries(tmp_path) == entries


def test_truncated_replay_file_is_fatal_and_writes_nothing(tmp_path: Path) -> None:
    cut = tmp_path / "cut.xml"
    cut.write_text(THIS_HOST_KVM.read_text()[:500])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = kvminfo("features-file", "-o", str(out_dir / "f"), "--domcaps-xml", str(cut))
    assert_one_clean_error_line(done, f"{cut}: not valid domain capabilities XML")
    assert only_entries(out_dir) == []


class Sidecar:
    """`kvminfo features-file ...` running in the background, stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log_path = tmp_path / "sidecar.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([str(KVMINFO), "features-file", *args],
                                        stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, fragment: str, count: int = 1, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.log().count(fragment) < count:
            assert self.process.poll() is None, f"sidecar exited {self.process.returncode}: {self.log()}"
            assert time.monotonic() < deadline, f"no {fragment!r} x{count} in sidecar log:\n{self.log()}"
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 2.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def sidecar_factory(tmp_path: Path):
    started: list[Sidecar] = []

    def start(*args: str) -> Sidecar:
        sidecar = Sidecar(tmp_path, *args)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.close()


def test_sidecar_rewrites_only_on_change_and_exits_cleanly_on_sigterm(tmp_path: Path, sidecar_factory) -> None:
    out_dir = tmp_path / "features.d"
    out_dir.mkdir()
    out = out_dir / "kvminfo"
    replay = tmp_path / "domcaps.xml"
    replay.write_text(THIS_HOST_KVM.read_text())
    sidecar = sidecar_factory("-o", str(out), "--interval", "1s", "--expiry", "1h", "--domcaps-xml", str(replay))

    sidecar.wait_for_log("reason: no feature file yet")
    first = out.stat()
    assert parse_feature_file(out.read_text()).labels["feature.node.kubernetes.io/kvm-info-host-model"] == "kvm64"
    sidecar.wait_for_log("labels unchanged, expiry not near", count=2)
    assert out.stat().st_ino == first.st_ino and out.stat().st_mtime_ns == first.st_mtime_ns

    # libvirt now reports another host: the labels change, the file is replaced.
    write_atomic(replay, VIRT_MANAGER.read_bytes())
    sidecar.wait_for_log("reason: labels changed")
    labels = parse_feature_file(out.read_text()).labels
    assert labels["feature.node.kubernetes.io/kvm-info-host-model"] == "Skylake-Client-IBRS"
    assert out.stat().st_ino != first.st_ino  # a rename, never an in-place write
    # changed labels are listed after "~" (the CPU vendor changes too: it is libvirt's host-model vendor)
    assert re.search(r"~[^;)]*feature\.node\.kubernetes\.io/kvm-info-host-model\b", sidecar.log())

    code, took = sidecar.terminate(timeout_s=30.0)
    assert code == 0, f"exit {code} after {took:.2f}s"
    assert "stopping on SIGTERM" in sidecar.log()
    assert "Traceback" not in sidecar.log()
    assert only_entries(out_dir) == ["kvminfo"]


def test_sidecar_restart_leaves_a_fresh_identical_file_alone(tmp_path: Path, sidecar_factory) -> None:
    out = tmp_path / "kvminfo"
    assert kvminfo("features-file", "-o", str(out), "--no-libvirt").returncode == 0
    before = out.stat()
    sidecar = sidecar_factory("-o", str(out), "--interval", "1m", "--no-libvirt")
    sidecar.wait_for_log("labels unchanged, expiry not near")
    assert out.stat().st_ino == before.st_ino and out.stat().st_mtime_ns == before.st_mtime_ns
    assert sidecar.terminate()[0] == 0


def test_sidecar_rewrites_when_expiry_is_near(tmp_path: Path, sidecar_factory) -> None:
    out = tmp_path / "kvminfo"
    sidecar = sidecar_factory("-o", str(out), "--interval", "1s", "--expiry", "12s", "--no-libvirt")
    sidecar.wait_for_log("reason: no feature file yet")
    sidecar.wait_for_log("reason: expiry near", timeout_s=6.0)
    assert parse_feature_file(out.read_text()).expires_at > datetime.now(UTC)
    assert sidecar.terminate()[0] == 0


def test_sidecar_rewrites_a_foreign_far_future_expiry(tmp_path: Path, sidecar_factory) -> None:
    out = tmp_path / "kvminfo"
    labels = dict(line.split("=", 1) for line in kvminfo("labels", "--no-libvirt").stdout.splitlines())
    out.write_bytes(render_feature_file(labels, FAR_FUTURE))  # same labels, expiry far beyond ours
    sidecar = sidecar_factory("-o", str(out), "--interval", "1s", "--expiry", "1h", "--no-libvirt")
    sidecar.wait_for_log("reason: expiry 2099-01-01T00:00:00Z is later than now + --expiry")
    written = parse_feature_file(out.read_text())
    assert written.labels == labels
    assert written.expires_at <= datetime.now(UTC) + timedelta(hours=1)
    assert sidecar.terminate()[0] == 0


def test_one_shot_with_expiry_never_writes_labels_that_do_not_lapse(tmp_path: Path) -> None:
    """Issue 9 case 10: the one-shot file (init containers) expired after an hour and the node lost its labels."""
    out = tmp_path / "kvminfo"
    done = kvminfo("features-file", "-o", str(out), "--expiry", "never", "--no-libvirt")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "+expiry-time" not in text and "expires never" in done.stderr
    assert parse_feature_file(text).labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"


def test_sidecar_recovers_when_its_directory_comes_back(tmp_path: Path, sidecar_factory) -> None:
    out_dir = tmp_path / "features.d"
    out_dir.mkdir()
    sidecar = sidecar_factory("-o", str(out_dir / "kvminfo"), "--interval", "1s", "--no-libvirt")
    sidecar.wait_for_log("reason: no feature file yet")
    shutil.rmtree(out_dir)
    sidecar.wait_for_log("does not exist; retrying in 1s")
    out_dir.mkdir()
    sidecar.wait_for_log("reason: no feature file yet", count=2)
    assert sidecar.terminate()[0] == 0


def test_hung_libvirt_costs_only_its_deadline(tmp_path: Path, private_libvirtd: PrivateLibvirtd) -> None:
    private_libvirtd.pause()
    out = tmp_path / "kvminfo"
    started = time.monotonic()
    done = kvminfo("features-file", "-o", str(out), "--libvirt-uri", private_libvirtd.uri, "--libvirt-timeout", "1")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # The daemon stays paused for ever: finishing at all means the 1 s deadline held
    # (a generous bound, so a loaded machine's start-up cannot fail it).
    assert took < 20, took
    assert parse_feature_file(out.read_text()).labels["feature.node.kubernetes.io/kvm-info-usable"] == "true"  # KVM still reported


def test_sigterm_during_a_hung_probe_exits_at_once(tmp_path: Path, private_libvirtd: PrivateLibvirtd,
                                                   sidecar_factory) -> None:
    private_libvirtd.pause()
    sidecar = sidecar_factory("-o", str(tmp_path / "kvminfo"), "--interval", "1m",
                              "--libvirt-uri", private_libvirtd.uri, "--libvirt-timeout", "30")
    wait_until_catching(sidecar.process)
    time.sleep(0.5)  # into the hung probe, well inside the 30 s libvirt deadline
    code, took = sidecar.terminate(timeout_s=25.0)
    assert code == 0
    assert took < 15, took  # the 30 s libvirt deadline was not waited out
    assert "stopping on SIGTERM" in sidecar.log()
    assert not (tmp_path / "kvminfo").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kvminfo.tmp")]


def test_sigterm_before_a_one_shot_write_is_not_success(tmp_path: Path, private_libvirtd: PrivateLibvirtd,
                                                        sidecar_factory) -> None:
    private_libvirtd.pause()
    one_shot = sidecar_factory("-o", str(tmp_path / "kvminfo"),
                               "--libvirt-uri", private_libvirtd.uri, "--libvirt-timeout", "30")
    wait_until_catching(one_shot.process)
    time.sleep(0.5)
    code, took = one_shot.terminate(timeout_s=25.0)
    assert code == 1, code
    assert took < 15, took  # the 30 s libvirt deadline was not waited out
    assert "stopped on SIGTERM before" in one_shot.log()
    assert not (tmp_path / "kvminfo").exists()


nfd_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
nfd_values = st.one_of(st.just(""), nfd_names)


@given(labels=st.dictionaries(st.tuples(st.sampled_from(["", "example.com/", "hyperv.node.kubevirt.io/"]), nfd_names)
                              .map("".join), nfd_values, max_size=30),
       seconds=st.integers(min_value=0, max_value=10 * 365 * 86400))
def test_render_parse_round_trip(labels: dict[str, str], seconds: int) -> None:
    for key, value in labels.items():
        check_label(key, value)  # only what NFD accepts, i.e. what collect() can produce
    expires_at = NOW + timedelta(seconds=seconds)
    parsed = parse_feature_file(render_feature_file(labels, expires_at).decode())
    assert parsed.labels == labels
    assert parsed.expires_at == expires_at
