"""The real device plugin process on its way to Register (issue 12: the kubelet
needs only the gRPC server and Register). What only /metrics and /healthz need
(prometheus-client, wsgiref's HTTP server) is imported after the first Register,
and /metrics still counts what happened before it was served. What a mode does
not use is not imported at all: PyYAML without a config file, the CDI module
without a CDI resource.

Imports are seen by a meta path finder that notes the CLOCK_MONOTONIC time of a
module's first import in the plugin process (it finds nothing itself); the
kubelet emulator notes the same clock when Register reaches it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from plugin_harness import KVMINFO, free_port, kubelet, make_char_device

RESOURCE = "startup.kvminfo.io/node"
# Runs an installed console script (argv[1]) as its own process would, noting imports.
RECORDER = r"""
import os, sys, time
watched = set(os.environ["WATCHED"].split(","))
log = open(os.environ["IMPORT_LOG"], "a", buffering=1)
for name in watched & set(sys.modules):
    log.write(f"{name} 0\n")  # already there at start
class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name in watched:
            watched.discard(name)
            log.write(f"{name} {time.monotonic()}\n")
        return None
sys.meta_path.insert(0, Recorder())
sys.argv = sys.argv[1:]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""
WATCHED = ("prometheus_client", "wsgiref", "importlib.metadata", "yaml", "kvminfo_plugin.cdi")


def _imports_while_registering(script: Path, *args: str) -> tuple[float, dict[str, float], str]:
    """Run ``script args`` against the kubelet emulator until /metrics answers;
    (Register time, module -> first import time, the /metrics text)."""
    work = Path(tempfile.mkdtemp(prefix="kvminfo-st-"))
    plugin_dir, import_log = work / "dp", work / "imports"
    plugin_dir.mkdir()
    node = make_char_device(work / "node")
    port = free_port()
    with kubelet(plugin_dir) as k:
        process = subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(script), *args, "--plugin-dir", str(plugin_dir),
             "--resource", f"{RESOURCE}={node}", "--metrics-port", str(port)],
            env={**os.environ, "IMPORT_LOG": str(import_log), "WATCHED": ",".join(WATCHED)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            registered_at = k.wait_registered(RESOURCE, timeout_s=30).registered_at
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                        text = response.read().decode()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    imports = {name: float(at) for name, at in (line.split() for line in import_log.read_text().splitlines())}
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return registered_at, imports, text


def test_metrics_libraries_are_imported_after_register_and_miss_no_count() -> None:
    registered_at, imports, text = _imports_while_registering(KVMINFO, "device-plugin")
    for module in ("prometheus_client", "wsgiref"):
        assert module in imports and imports[module] > registered_at, (module, imports, registered_at)
    assert "yaml" not in imports and "kvminfo_plugin.cdi" not in imports, imports  # flags only, no CDI
    # counted before the HTTP server existed
    assert f'kvminfo_plugin_registrations_total{{resource="{RESOURCE}",result="ok"}} 1.0' in text
    assert f'kvminfo_plugin_devices{{health="Healthy",resource="{RESOURCE}"}}' in text


def test_console_script_never_reads_entry_points() -> None:
    script = KVMINFO.with_name("kvminfo-device-plugin")
    if not script.exists():
        pytest.fail(f"{script} is not installed (pyproject.toml [project.scripts]; run make install)")
    registered_at, imports, text = _imports_while_registering(script)
    assert "importlib.metadata" not in imports, imports
    assert "yaml" not in imports and "kvminfo_plugin.cdi" not in imports, imports
    assert imports["prometheus_client"] > registered_at
    assert f'kvminfo_plugin_registrations_total{{resource="{RESOURCE}",result="ok"}} 1.0' in text


def test_a_config_file_and_a_cdi_resource_import_what_they_need(tmp_path: Path) -> None:
    config = tmp_path / "plugin.yaml"
    config.write_text(f"cdiDir: {tmp_path}\n")
    _, imports, _ = _imports_while_registering(KVMINFO.with_name("kvminfo-device-plugin"), "--config", str(config), "--cdi")
    assert "yaml" in imports and "kvminfo_plugin.cdi" in imports, imports
