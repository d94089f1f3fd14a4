"""Run the device plugin for a test: in-process (a thread) or as the real
`kvminfo device-plugin` subprocess, next to a KubeletEmulator."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cdi_rules
from kubelet_emulator import KubeletEmulator

from kvminfo_plugin.config import config_from_mapping
from kvminfo_plugin.runtime import PluginRuntime

REPO = Path(__file__).resolve().parent.parent
KVMINFO = REPO / ".venv" / "bin" / "kvminfo"
NULL_RDEV = os.stat("/dev/null").st_rdev  # a harmless real char device to clone with mknod
TEST_RESOURCE = "test.kvminfo.io/node"


def device_settings(plugin_dir: Path, device: Path, **resource: object) -> dict[str, object]:
    """In-process plugin settings serving ``device`` as TEST_RESOURCE (4 slots, a 60 s poll)."""
    return {"pluginDir": str(plugin_dir), "pollIntervalSeconds": 60,
            "resources": [{"name": TEST_RESOURCE, "devices": [str(device)], "slots": 4, **resource}]}


def make_char_device(path: Path, rdev: int = NULL_RDEV) -> Path:
    os.mknod(path, 0o600 | 0o020000, rdev)  # S_IFCHR
    return path


@contextlib.contextmanager
def running_plugin(settings: dict[str, Any]) -> Iterator[PluginRuntime]:
    """The plugin from a config mapping (as the YAML file would give), in a thread.
    Every CDI spec it leaves is checked against the CDI project's schema and rules."""
    config = config_from_mapping({"metricsPort": 0, **settings})
    runtime = PluginRuntime(config)
    thread = threading.Thread(target=runtime.run, name="plugin-under-test", daemon=True)
    thread.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        thread.join(10)
        assert not thread.is_alive(), "plugin did not stop within 10 s"
    for resource in config.resources:
        spec = config.cdi_dir / (resource.effective_cdi_kind.replace("/", "-") + ".json")
        if resource.cdi and spec.is_file():
            assert cdi_rules.problems(json.loads(spec.read_text())) == [], spec


@contextlib.contextmanager
def kubelet(plugin_dir: Path) -> Iterator[KubeletEmulator]:
    emulator = KubeletEmulator(plugin_dir).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def plugin_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(KVMINFO), "device-plugin", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path: (status, body), an error status too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
