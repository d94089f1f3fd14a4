"""The real `kvminfo device-plugin` process next to the kubelet emulator (tests/kubelet_emulator.py).

The plugin runs as its own process so that its file descriptors, threads and
RSS can be read from /proc/<pid>, and so that signals reach it as they do in
a pod. Its log goes to a file, not a pipe: under load it logs one line per
Allocate, and a full pipe would stall it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from plugin_harness import make_char_device

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc
from soak.harness import KVMINFO

KVM_RESOURCE = "devices.kvminfo.io/kvm"  # the real /dev/kvm
FLAP_RESOURCE = "soak.kvminfo.io/flap"  # a mknod'd char device the scenarios remove and restore
SLOTS = 4


@dataclass
class Layout:
    """Directories of one scenario, all under one short temp dir (socket paths < 108 bytes)."""

    root: Path

    @property
    def plugin_dir(self) -> Path:
        return self.root / "dp"

    @property
    def cdi_dir(self) -> Path:
        return self.root / "cdi"

    @property
    def flap_device(self) -> Path:
        return self.root / "dev" / "flap0"

    def create(self) -> Layout:
        for directory in (self.plugin_dir, self.cdi_dir, self.flap_device.parent):
            directory.mkdir(mode=0o755)
        make_char_device(self.flap_device)
        return self

    def plugin_args(self) -> list[str]:
        return ["--plugin-dir", str(self.plugin_dir), "--cdi-dir", str(self.cdi_dir), "--cdi", "--metrics-port", "0",
                "--slots", str(SLOTS), "--resource", f"{KVM_RESOURCE}=/dev/kvm",
                "--resource", f"{FLAP_RESOURCE}={self.flap_device}"]

    def plugin_sockets(self) -> list[Path]:
        return sorted(p for p in self.plugin_dir.iterdir() if p.is_socket() and p.name != "kubelet.sock")

    def socket_of(self, resource: str) -> Path:
        return self.plugin_dir / ("kvminfo-" + resource.replace("/", "_") + ".sock")


class PluginProcess:
    def __init__(self, layout: Layout, *extra: str, umask: int = -1, log_name: str = "plugin.log") -> None:
        self.log_path = layout.root / log_name
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([str(KVMINFO), "device-plugin", *layout.plugin_args(), *extra],
                                        stdout=subprocess.DEVNULL, stderr=self._log, umask=umask)
        self.pid = self.process.pid

    def __enter__(self) -> PluginProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_lines(self) -> list[str]:
        self._log.flush()
        return self.log_path.read_text().splitlines()

    def terminate(self, timeout_s: float = 5.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after timeout_s, seconds taken)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def wait_until(predicate, timeout_s: float, step_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True


class Caller:
    """An Allocate client of our own (not the emulator's channel), as a second kubelet worker would be.

    wait_for_ready: while the kubelet restarts, the plugin's socket is briefly
    gone; the call waits for it instead of failing at once.
    """

    def __init__(self, socket_path: Path, timeout_s: float = 5.0) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.stub = api_grpc.DevicePluginStub(self.channel)
        self.timeout_s = timeout_s

    def allocate(self, device_id: str) -> api.AllocateResponse:
        return self.stub.Allocate(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=[device_id])]), timeout=self.timeout_s, wait_for_ready=True)

    def close(self) -> None:
        self.channel.close()

