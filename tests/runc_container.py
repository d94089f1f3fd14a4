"""Run a command in a real runc container, as a pod's container runs: runc's
own default spec (`runc spec`: its namespaces, capabilities and device rules:
deny all, then null, zero, full, random, urandom, tty, ptmx, pts, tun), the
host's / bind-mounted read-only as the root filesystem (so the checkout and its
.venv are there), runc's own /proc, /dev and /sys over it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import require_real

REPO = Path(__file__).resolve().parent.parent


def require_runc() -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        require_real("needs root and runc (apt-get install runc) to run a container")
        pytest.skip("needs root and runc")
    if not (Path("/sys/fs/cgroup/devices/devices.deny").exists() or Path("/sys/fs/cgroup/cgroup.controllers").exists()):
        require_real("no device cgroup to confine a container with")
        pytest.skip("no device cgroup to confine a container with")


def default_spec(bundle: Path, args: list[str]) -> dict[str, Any]:
    """runc's default config.json for ``bundle`` running ``args`` over the host's / (read-only)."""
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True, timeout=30)
    spec = json.loads((bundle / "config.json").read_text())
    (bundle / "rootfs").mkdir()
    spec["root"] = {"path": "rootfs", "readonly": True}
    spec["mounts"].insert(0, {"destination": "/", "type": "bind", "source": "/", "options": ["rbind", "ro"]})
    spec["process"].update(terminal=False, args=args, cwd="/",
                           env=["PATH=/usr/bin:/bin", f"PYTHONPATH={REPO / 'plugin'}:{REPO}"])
    return spec


def run(bundle: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Write ``spec`` into ``bundle``, run it to the end and delete the container."""
    (bundle / "config.json").write_text(json.dumps(spec))
    container = f"kvminfo-test-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run(["runc", "run", "--bundle", str(bundle), container], capture_output=True, text=True,
                              timeout=60)
    finally:
        subprocess.run(["runc", "delete", "--force", container], capture_output=True, timeout=30)
