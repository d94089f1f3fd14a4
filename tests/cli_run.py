"""Running the kvminfo CLI as an operator would, shared by the CLI test modules."""

from __future__ import annotations

import os
import subprocess

from conftest import KVMINFO

# The pod environment the commands read; cleared so the host's own never leaks in.
POD_ENVIRONMENT = ("NODE_NAME", "POD_NAMESPACE", "POD_NAME", "KUBERNETES_SERVICE_HOST", "KUBECONFIG")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`kvminfo ARGS` in a clean pod environment plus ``env``; output captured as text."""
    environ = {k: v for k, v in os.environ.items() if k not in POD_ENVIRONMENT}
    return subprocess.run([str(KVMINFO), *args], capture_output=True, text=True, timeout=timeout,
                          env={**environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess, status: int, prefix: str, *fragments: str) -> str:
    """Assert exit ``status`` and exactly one stderr line starting with ``prefix`` holding every fragment."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == status, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(prefix), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
