"""The real device plugin process from start to Register, by both entry points
(`kvminfo device-plugin` and the DaemonSet's `kvminfo-device-plugin`), with
flags only and with a config file and a CDI resource: it registers, /metrics
and /healthz answer from start (before any kubelet is there: the registered
gauge is 0 and /healthz says why it is not ready), and /metrics counts the
registration. A SIGTERM ends it with status 0 and its socket removed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from plugin_harness import KVMINFO, free_port, http_get, kubelet, make_char_device
from prometheus_client.parser import text_string_to_metric_families

RESOURCE = "startup.kvminfo.io/node"


def answered(port: int, path: str, timeout_s: float = 30.0) -> tuple[int, str]:
    """The first answer of ``path``, waiting while the port is not open yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return http_get(port, path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@contextmanager
def plugin(argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    """The plugin process for ``argv`` + its plugin dir, device and metrics port; on the
    way out it is sent SIGTERM and must exit 0 with its socket gone."""
    work = Path(tempfile.mkdtemp(prefix="kvminfo-st-"))
    plugin_dir = work / "dp"
    plugin_dir.mkdir()
    node = make_char_device(work / "node")
    port = free_port()
    process = subprocess.Popen([*argv, "--plugin-dir", str(plugin_dir), "--resource", f"{RESOURCE}={node}",
                                "--metrics-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield process, plugin_dir, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    assert process.returncode == 0, stderr
    assert "stopped; sockets removed" in stderr, stderr


def registers_and_counts(argv: list[str]) -> None:
    with plugin(argv) as (_, plugin_dir, port):
        # served from start: before any kubelet, /healthz says why not and the gauge is 0
        status, why = answered(port, "/healthz")
        assert status == 503 and RESOURCE in why, why
        assert samples(http_get(port, "/metrics")[1])[("kvminfo_plugin_registered", (("resource", RESOURCE),))] == 0.0
        with kubelet(plugin_dir) as k:
            k.wait_registered(RESOURCE, timeout_s=30)
            deadline = time.monotonic() + 10
            while (status := http_get(port, "/healthz")[0]) != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert status == 200
            seen = samples(http_get(port, "/metrics")[1])
            assert seen[("kvminfo_plugin_registrations_total", (("resource", RESOURCE), ("result", "ok")))] == 1.0
            assert seen[("kvminfo_plugin_registered", (("resource", RESOURCE),))] == 1.0
            assert seen[("kvminfo_plugin_devices", (("health", "Healthy"), ("resource", RESOURCE)))] == 1000.0


def test_the_cli_command_registers_and_counts_it() -> None:
    registers_and_counts([str(KVMINFO), "device-plugin"])


def test_the_console_script_registers_and_counts_it() -> None:
    script = KVMINFO.with_name("kvminfo-device-plugin")
    if not script.exists():
        pytest.fail(f"{script} is not installed (pyproject.toml [project.scripts]; run make install)")
    registers_and_counts([str(script)])


def test_a_config_file_and_a_cdi_resource(tmp_path: Path) -> None:
    config = tmp_path / "plugin.yaml"
    config.write_text(f"cdiDir: {tmp_path}\n")
    with plugin([sys.executable, "-m", "kvminfo", "device-plugin", "--config", str(config), "--cdi"]) as (_, plugin_dir, _port):
        with kubelet(plugin_dir) as k:
            k.wait_registered(RESOURCE, timeout_s=30)
            (spec,) = tmp_path.glob("*.json")
            assert json.loads(spec.read_text())["kind"] == RESOURCE
