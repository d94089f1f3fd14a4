"""The real `kvminfo device-plugin` process: start, serve the real /dev/kvm, SIGTERM, bad config."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import cdi_rules
import pytest
from plugin_harness import KVMINFO, kubelet, plugin_process
from signal_ready import wait_until_catching

RESOURCE = "devices.kvminfo.io/kvm"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="kvminfo-dp-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _sockets(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_socket())


def test_sigterm_stops_serving_and_cleans_up(short_dir: Path) -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this machine")
    plugin_dir, cdi_dir = short_dir / "dp", short_dir / "cdi"
    plugin_dir.mkdir()
    cdi_dir.mkdir()
    with kubelet(plugin_dir) as k:
        process = plugin_process("--plugin-dir", str(plugin_dir), "--cdi-dir", str(cdi_dir), "--cdi", "--metrics-port", "0")
        try:
            k.wait_registered(RESOURCE, timeout_s=10)
            assert set(k.latest(RESOURCE).values()) == {"Healthy"}  # the real /dev/kvm opens
            assert _sockets(plugin_dir) == ["kubelet.sock", "kvminfo-devices.kvminfo.io_kvm.sock"]
            assert (cdi_dir / "devices.kvminfo.io-kvm.json").is_file()
            assert k.admit(RESOURCE, 1).cdi_devices[0].name == "devices.kvminfo.io/kvm=dev-kvm"
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=5)
            assert time.monotonic() - signalled < 5
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr
        assert _sockets(plugin_dir) == ["kubelet.sock"]
        # Issue 10 case 2: the spec stays, so containers of admitted pods can restart while the plugin is away.
        assert [p.name for p in cdi_dir.iterdir()] == ["devices.kvminfo.io-kvm.json"]
        assert cdi_rules.problems(json.loads((cdi_dir / "devices.kvminfo.io-kvm.json").read_text())) == []
        assert "Traceback" not in stderr
        # one line per event: registration, allocation, the signal
        assert "registered devices.kvminfo.io/kvm with the kubelet" in stderr
        assert "allocated devices.kvminfo.io/kvm" in stderr
        assert "SIGTERM received" in stderr


def test_sigint_without_a_kubelet_exits_zero(short_dir: Path) -> None:
    process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0")
    time.sleep(1.5)  # waiting for a kubelet, retrying: must not have exited
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0
    assert "no kubelet socket" in stderr and "retrying in" in stderr
    assert _sockets(short_dir) == []


BAD_CONFIGS = [
    ("resources:\n  - name: kvm\n    devices: [/dev/kvm]\n", "resources[0].name"),
    ("resources:\n  - name: kubernetes.io/kvm\n    devices: [/dev/kvm]\n", "resources[0].name"),
    # Issue 10 case 6: the kubelet refuses any name containing kubernetes.io/ (it used to be retried forever)
    ("resources:\n  - name: notkubernetes.io/kvm\n    devices: [/dev/kvm]\n", "resources[0].name"),
    # Issue 10 case 7: 2 x 100,000 slots make a 6.6 MB ListAndWatch message; the kubelet reads at most 4 MiB
    ("resources:\n  - name: a.io/tty\n    groups: [{devices: [/dev/ttyUSB0]}, {devices: [/dev/ttyUSB1]}]\n"
     "    slots: 100000\n", "resources[0].slots"),
    # Issue 10 case 4: a CDI class must start with a letter
    ("resources:\n  - name: a.io/9pfs\n    devices: [/dev/kvm]\n    cdi: true\n", "resources[0].name"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    slots: 0\n", "resources[0].slots"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    slots: many\n", "resources[0].slots"),
    ("resources:\n  - name: a.io/kvm\n    devices: [dev/kvm]\n", "resources[0].devices[0]"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    permissions: rwx\n", "resources[0].permissions"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    mounts: [{hostPath: x}]\n", "resources[0].mounts[0].hostPath"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    envs: {'1X': y}\n", "resources[0].envs.1X"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    cdiKind: nokind\n", "resources[0].cdiKind"),
    ("resources:\n  - name: a.io/kvm\n    devices: [/dev/kvm]\n    slot: 3\n", "resources[0].slot"),
    ("resources:\n  - {name: a.io/k, devices: [/dev/kvm]}\n  - {name: a.io/k, devices: [/dev/kvm]}\n", "resources:"),
    ("metricsPort: 70000\n", "metricsPort"),
    ("pluginDir: relative/dir\n", "pluginDir"),
    ("resources: [\n", "line"),
    ("- just\n- a list\n", "config"),
]


@pytest.mark.parametrize("text,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_field(short_dir: Path, text: str, field: str) -> None:
    config = short_dir / "plugin.yaml"
    config.write_text(text)
    # A flag replaces the file's value before validation, so the file's own pluginDir is seen only without --plugin-dir.
    plugin_dir = [] if text.startswith("pluginDir") else ["--plugin-dir", str(short_dir)]
    done = subprocess.run([str(Path(__file__).resolve().parent.parent / ".venv/bin/kvminfo"), "device-plugin",
                           "--config", str(config), *plugin_dir],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"kvminfo device-plugin: {config}:") and field in lines[0]
    assert _sockets(short_dir) == []


@pytest.mark.parametrize("args,flag", [
    (["--slots", "0"], "--slots"),
    (["--permissions", "x"], "--permissions"),
    (["--resource", "kvm=/dev/kvm"], "--resource"),
    (["--resource", "a.io/kvm"], "--resource"),
    (["--resource", "devices.kvminfo.io/kvm=/dev/kvm,"], "--resource: an empty path"),  # a trailing comma was dropped silently
    (["--resource", "a.io/kvm=/dev/kvm,,/dev/net/tun"], "--resource: an empty path"),
    (["--metrics-port", "99999"], "--metrics-port"),
    (["--config", "/nonexistent/plugin.yaml"], "/nonexistent/plugin.yaml"),
])
def test_bad_flags_are_one_line_naming_the_flag(short_dir: Path, args: list[str], flag: str) -> None:
    process = plugin_process("--plugin-dir", str(short_dir), *args)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2
    assert len(stderr.strip().splitlines()) == 1 and flag in stderr, stderr


def test_help_explains_every_option() -> None:
    process = plugin_process("--help")
    stdout, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    for option in ("--config", "--plugin-dir", "--cdi-dir", "--metrics-port", "--resource", "--slots",
                   "--permissions", "--cdi", "--no-cdi", "--remove-cdi-specs", "groups", "microk8s", "1000"):
        assert option in stdout
    # Slots are counted per device group (README "Device groups"), not per node; health never opens a node with sysfs.
    text = " ".join(stdout.split())
    assert "slots per device group" in text and "per device node" not in text and "shared node at once" not in text
    assert "cannot be opened" not in text


def test_sigterm_while_a_wedged_kubelet_holds_register(short_dir: Path) -> None:
    with kubelet(short_dir) as k:
        k.answering.clear()  # Register is received and never answered
        process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0")
        try:
            k.wait_for(lambda: k.register_calls >= 1, timeout_s=10, what="a Register call")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=5)
            assert time.monotonic() - signalled < 2  # not the 10 s Register timeout
        finally:
            k.answering.set()
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr
        assert _sockets(short_dir) == ["kubelet.sock"]


def _only_line(process: subprocess.Popen[str]) -> str:
    """The process's whole stderr, which must be one error line (no "starting" or "stopped" around it)."""
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvminfo device-plugin: "), stderr
    return lines[0]


def test_metrics_port_in_use_is_one_line(short_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _only_line(plugin_process("--plugin-dir", str(short_dir / "pd"), "--metrics-port", str(port)))
        assert line.startswith("kvminfo device-plugin: --metrics-port: cannot listen on") and f":{port}: " in line, line
        config = short_dir / "plugin.yaml"
        config.write_text(f"metricsPort: {port}\n")  # from the file, the file's field is named
        line = _only_line(plugin_process("--config", str(config), "--plugin-dir", str(short_dir / "pd")))
        assert line.startswith(f"kvminfo device-plugin: {config}: metricsPort: cannot listen on"), line
    assert not (short_dir / "pd").exists()  # refused before anything was created


def test_bad_metrics_address_names_the_address(short_dir: Path) -> None:
    config = short_dir / "plugin.yaml"
    config.write_text('metricsAddress: "not an address"\nmetricsPort: 9799\n')
    line = _only_line(plugin_process("--config", str(config), "--plugin-dir", str(short_dir)))
    assert line.startswith(f"kvminfo device-plugin: {config}: metricsAddress: 'not an address'"), line
    assert _sockets(short_dir) == []


def test_plugin_dir_that_is_a_file_is_not_a_directory(short_dir: Path) -> None:
    plain = short_dir / "passwd"
    plain.write_text("root:x:0:0::/root:/bin/sh\n")
    line = _only_line(plugin_process("--plugin-dir", str(plain), "--metrics-port", "0"))
    assert line == f"kvminfo device-plugin: --plugin-dir: {plain}: not a directory", line


def test_start_up_warns_about_a_node_that_is_no_char_device_and_kubevirts_name(short_dir: Path) -> None:
    plain = short_dir / "plain"
    plain.write_text("")
    process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0",
                             "--resource", f"test.kvminfo.io/plain={plain}", "--resource", "devices.kubevirt.io/kvm=/dev/kvm")
    wait_until_catching(process)  # the start-up warnings are logged whatever happens after this
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    warnings = [line for line in stderr.splitlines() if "WARNING" in line and "registering" not in line]
    assert len(warnings) == 2, stderr
    assert any(f"{plain}" in w and "not a character device" in w for w in warnings), warnings
    assert any("devices.kubevirt.io/kvm" in w and "KubeVirt" in w for w in warnings), warnings


# ---- issue 10 cases that need the real process --------------------------------------------------

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z kvminfo (INFO|WARNING|ERROR): ")


def test_case9_an_exclusive_device_in_use_is_healthy(short_dir: Path) -> None:
    """A tty held with TIOCEXCL answers open() with EBUSY (as /dev/tpm0 or a VFIO group do while their
    workload holds them). The plugin runs without CAP_SYS_ADMIN, which would bypass the lock."""
    leader, follower = pty.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCEXCL)
        node = os.ttyname(follower)
        resource = "test.kvminfo.io/tty"
        with kubelet(short_dir) as k:
            process = subprocess.Popen(["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", str(KVMINFO),
                                        "device-plugin", "--plugin-dir", str(short_dir), "--metrics-port", "0",
                                        "--resource", f"{resource}={node}", "--slots", "1"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                k.wait_registered(resource, timeout_s=10)
                time.sleep(0.3)
                assert k.latest(resource) and set(k.latest(resource).values()) == {"Healthy"}
                assert k.admit(resource, 1).devices[0].host_path == node
            finally:
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=5)
        assert "unhealthy" not in stderr and "Traceback" not in stderr, stderr  # before: "cannot open: Device or resource busy"
    finally:
        os.close(follower)
        os.close(leader)


def test_case10_logs_say_what_happened_once_with_time_and_errno(short_dir: Path) -> None:
    """The kubelet's socket file is there but nothing listens (a kubelet that died): the plugin says
    so with the errno name, once, not gRPC's 'UNAVAILABLE: failed to connect to all addresses'."""
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(short_dir / "kubelet.sock"))  # bound, never listening: connect() gets ECONNREFUSED
    try:
        process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0")
        time.sleep(3.0)  # ~6 attempts with backoff 0.1, 0.2, 0.4, 0.8, 1.6 s
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=5)
    finally:
        stale.close()
    lines = stderr.splitlines()
    assert all(TIMESTAMP.match(line) for line in lines), lines
    failures = [line for line in lines if "registering" in line]
    assert len(failures) == 1, failures  # the same reason again is not news
    assert "ECONNREFUSED" in failures[0] and "kubelet is not running" in failures[0]
    assert "UNAVAILABLE" not in stderr and "failed to connect to all addresses" not in stderr


def test_case10_a_bind_error_is_one_line_with_its_errno_and_no_grpc_core_lines(short_dir: Path) -> None:
    plugin_dir = short_dir / "dp"
    plugin_dir.mkdir(mode=0o555)  # root without CAP_DAC_OVERRIDE cannot create the socket here
    process = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                              "--inh-caps=-dac_override,-dac_read_search", str(KVMINFO), "device-plugin",
                              "--plugin-dir", str(plugin_dir), "--metrics-port", "0"],
                             capture_output=True, text=True, timeout=20)
    assert process.returncode == 2, process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("kvminfo device-plugin: ") and "cannot serve" in last and "EACCES" in last, process.stderr
    assert "add_port.cc" not in process.stderr and "Traceback" not in process.stderr, process.stderr


def test_case10_a_node_missing_at_start_is_a_warning(short_dir: Path) -> None:
    process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0",
                             "--resource", f"test.kvminfo.io/gone={short_dir / 'no-such-node'}")
    wait_until_catching(process)  # run() logs each path's health first, stopped or not
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=5)
    [line] = [line for line in stderr.splitlines() if "no-such-node" in line and "starting" not in line]
    assert " WARNING: " in line and "missing" in line and "0 of 1000 slots Healthy" in line, line


def test_case2_remove_cdi_specs_is_the_explicit_uninstall_step(short_dir: Path) -> None:
    cdi_dir = short_dir / "cdi"
    cdi_dir.mkdir()
    foreign = cdi_dir / "b.io-other.json"  # where b.io/other's spec would go, holding another kind: not ours
    foreign.write_text('{"cdiVersion": "0.3.0", "kind": "vendor.example/else", "devices": []}')
    args = ["--plugin-dir", str(short_dir), "--cdi-dir", str(cdi_dir), "--cdi", "--metrics-port", "0",
            "--resource", "a.io/kvm=/dev/null"]
    with kubelet(short_dir) as k:
        process = plugin_process(*args)
        k.wait_registered("a.io/kvm", timeout_s=10)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=5)
    assert (cdi_dir / "a.io-kvm.json").is_file()
    done = subprocess.run([str(KVMINFO), "device-plugin", *args, "--resource", "b.io/other=/dev/null",
                           "--remove-cdi-specs"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{cdi_dir / 'a.io-kvm.json'}: removed",
                                        f"{foreign}: left in place: not a CDI spec of kind b.io/other"]
    assert sorted(p.name for p in cdi_dir.iterdir()) == ["b.io-other.json"]


def _blocked_signals(pid: int, tid: str) -> int:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk")


def test_stop_signals_are_taken_by_a_thread_never_by_a_handler(short_dir: Path) -> None:
    """Found by the plugin bench: SIGTERM right after registration, and the process did not exit
    in 10 s. A Python handler runs between two bytecodes of the main thread, also inside
    threading.Event or logging while they hold their locks; the handler then set an Event and
    logged, and deadlocked. Now every thread blocks SIGTERM and SIGINT and one thread sigwait()s."""
    stop_bits = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    with kubelet(short_dir) as k:
        for round_ in range(8):  # and SIGTERM at once after registration, again and again
            process = plugin_process("--plugin-dir", str(short_dir), "--metrics-port", "0")
            try:
                k.wait_registered(RESOURCE, count=round_ + 1, timeout_s=10)
                if round_ == 0:
                    tasks = os.listdir(f"/proc/{process.pid}/task")
                    # The one thread in sigwait() shows them unblocked while it waits (the kernel
                    # lets the waited-for signals through for it); every other thread blocks them.
                    open_to_them = [t for t in tasks if _blocked_signals(process.pid, t) & stop_bits != stop_bits]
                    assert len(tasks) > 2 and len(open_to_them) == 1, (len(tasks), open_to_them)
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=10)
                assert process.returncode == 0 and time.monotonic() - signalled < 3, stderr
                assert "SIGTERM received; stopping" in stderr
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_plugin_dir_removed_before_any_registration_is_waited_for(short_dir: Path) -> None:
    """Seen by a new user: `rm -rf` of the plugin dir while no kubelet had answered yet stopped the
    plugin with exit 2 ("cannot serve the device plugin socket: ENOENT"). The README promises it
    waits for the directory and serves and registers once it is back."""
    plugin_dir = short_dir / "pd"
    process = plugin_process("--plugin-dir", str(plugin_dir), "--metrics-port", "0")
    try:
        deadline = time.monotonic() + 20
        while not (plugin_dir / "kvminfo-devices.kvminfo.io_kvm.sock").is_socket():
            assert process.poll() is None and time.monotonic() < deadline, "never served"
            time.sleep(0.05)
        while plugin_dir.exists():  # the plugin may serve again between rmtree's unlink and rmdir
            shutil.rmtree(plugin_dir, ignore_errors=True)
        time.sleep(1.5)  # past the first serve retry
        assert process.poll() is None, process.communicate()[1]
        plugin_dir.mkdir()
        with kubelet(plugin_dir) as k:
            k.wait_registered(RESOURCE, timeout_s=10)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "retrying in" in stderr, stderr
