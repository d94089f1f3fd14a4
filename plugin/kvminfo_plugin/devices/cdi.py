"""CDI specs: what the container runtime injects for each fully qualified name
(vendor/class=name) that Allocate returns, and keeping them present.

One CDI device per device group, holding every node of the group. Written as
JSON, which is also YAML, so every CDI reader accepts it. Facts and rule
sources: ../shared/corpus/cdi/FACTS.md (container-device-interface at HEAD
05ae4b5 and v1.1.0).

A spec holds no per-allocation state, so it outlives the plugin: containers of
admitted pods that restart while the plugin is down (a DaemonSet update) still
resolve their CDI names. It is removed only on uninstall, explicitly
(``kvminfo device-plugin --remove-cdi-specs``), and only when it is ours.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvminfo.common.atomic import write_atomic
from kvminfo.common.errors import KvminfoError
from kvminfo.common.fsutil import remove_for_uninstall
from kvminfo.common.threads import Worker
from kvminfo_plugin.config import DeviceGroup, ResourceConfig
from kvminfo_plugin.devices.dirwatch import Change, DirectoryWatcher, DirEvent
from kvminfo_plugin.telemetry.logs import FailureLog, errno_text

log = logging.getLogger(__name__)

# Known spec versions, oldest first (specs-go/version.go). The oldest a reader takes is 0.3.0.
CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
_ASCII_DIGITS = frozenset("0123456789")


def qualified_name(resource: ResourceConfig, group: DeviceGroup) -> str:
    """``vendor/class=name``: what Allocate answers for ``group``."""
    return f"{resource.effective_cdi_kind}={group.name}"


def required_version(spec: dict[str, Any]) -> str:
    """The oldest cdiVersion that has every feature ``spec`` uses.

    The rules of specs-go/version.go (requiresV040 ... requiresV110), newest first;
    empty or omitted values never count (FACTS.md "Minimum required version rules")."""
    devices = spec.get("devices", [])
    edits = [spec.get("containerEdits") or {}, *((d.get("containerEdits") or {}) for d in devices)]
    rdt = [e["intelRdt"] for e in edits if e.get("intelRdt") is not None]
    nodes = [n for e in edits for n in e.get("deviceNodes") or []]
    if any(r.get("schemata") is not None or r.get("enableMonitoring") for r in rdt) or any(e.get("netDevices") for e in edits):
        return "1.1.0"
    if rdt or any(e.get("additionalGids") for e in edits):
        return "0.7.0"
    if spec.get("annotations") or any(d.get("annotations") for d in devices) or "." in spec.get("kind", "").partition("/")[2]:
        return "0.6.0"
    if any(d.get("name", "")[:1] in _ASCII_DIGITS for d in devices) or any(n.get("hostPath") for n in nodes):
        return "0.5.0"
    if any(m.get("type") for e in edits for m in e.get("mounts") or []):
        return "0.4.0"
    return "0.3.0"


Resolve = Callable[[str], str]


def _device_node(path: str, permissions: str, file_mode: int | None, resolve: Resolve) -> dict[str, Any]:
    """A configured node that is a symlink (a udev name like /dev/serial/by-id/...)
    keeps its name in the container (``path``) and names the real node as
    ``hostPath``: CDI lstat()s the host path and refuses anything but a device node
    (pkg/cdi/container-edits_unix.go deviceInfoFromPath). ``fileMode`` is the
    node's mode in the container, a JSON number (specs-go/config.go: *os.FileMode);
    see config.DEFAULT_CDI_FILE_MODE."""
    node: dict[str, Any] = {"path": path}
    real = resolve(path)
    if real != path:
        node["hostPath"] = real
    if file_mode is not None:
        node["fileMode"] = file_mode
    node["permissions"] = permissions
    return node


def build_spec(resource: ResourceConfig, resolve: Resolve = os.path.realpath) -> dict[str, Any]:
    """The spec's content; ``resolve`` maps a configured path to the node it names."""
    spec: dict[str, Any] = {
        "cdiVersion": "",
        "kind": resource.effective_cdi_kind,
        "devices": [
            {"name": group.name,
             "containerEdits": {"deviceNodes": [_device_node(p, resource.permissions, resource.cdi_file_mode, resolve)
                                                for p in group.paths]}}
            for group in resource.groups
        ],
    }
    common: dict[str, Any] = {}
    if resource.envs:
        common["env"] = [f"{k}={v}" for k, v in resource.envs]
    if resource.mounts:
        common["mounts"] = [{"hostPath": m.host_path, "containerPath": m.container_path,
                             "options": ["ro" if m.read_only else "rw", "bind"]} for m in resource.mounts]
    if common:
        spec["containerEdits"] = common
    spec["cdiVersion"] = required_version(spec)
    return spec


def spec_path(cdi_dir: Path, resource: ResourceConfig) -> Path:
    # The CDI convention (GenerateSpecName): <vendor>-<class>.json; it also keeps two resources apart.
    return cdi_dir / (resource.effective_cdi_kind.replace("/", "-") + ".json")


def encode(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec, indent=2).encode() + b"\n"


def _kind_in(path: Path) -> str | None:
    """The kind of the spec in ``path``; None when there is no such file; "" when it
    is not a spec this code can read (foreign, partial, not JSON)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return ""
    return data.get("kind", "") if isinstance(data, dict) else ""


def remove_specs(cdi_dir: Path, resources: tuple[ResourceConfig, ...]) -> list[str]:
    """Uninstall: delete the spec of each CDI resource, only where the file there is a
    spec of that resource's kind (never someone else's file). One line per file."""
    lines = []
    for resource in resources:
        if not resource.cdi:
            continue
        path = spec_path(cdi_dir, resource)
        kind = _kind_in(path)
        if kind is None:
            lines.append(f"{path}: not present")
        elif kind != resource.effective_cdi_kind:
            lines.append(f"{path}: left in place: not a CDI spec of kind {resource.effective_cdi_kind}")
        else:
            lines.append(remove_for_uninstall(path))
    return lines


class SpecKeeper:
    """Writes each CDI resource's spec at start and keeps it there: a spec removed
    (a cleaned tmpfs /var/run/cdi) or changed (a symlinked node now pointing
    elsewhere) is rewritten at once through inotify, at the latest within one poll.
    The spec is left in place on exit (see the module docstring)."""

    def __init__(self, cdi_dir: Path, resources: tuple[ResourceConfig, ...], poll_interval_s: float,
                 on_state: Callable[[ResourceConfig, str], None] = lambda _resource, _problem: None) -> None:
        """``on_state(resource, problem)``: called when a spec could not be written
        (``problem`` says why) and when it is present again (``problem`` "")."""
        self._cdi_dir = cdi_dir
        self._on_state = on_state
        self._failures: dict[str, FailureLog] = {r.name: FailureLog() for r in resources}
        self._resources = [r for r in resources if r.cdi]
        self._poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._names = {spec_path(cdi_dir, r).name for r in self._resources}
        # The device nodes' directories too: a symlinked node re-pointed by udev changes the spec.
        self._nodes = {p for r in self._resources for p in r.devices}
        self._written: dict[Path, bytes] = {}
        self._watcher: DirectoryWatcher | None = None
        self._worker = Worker("cdi-specs", self._run, wake=self._wake.set)

    def start(self) -> SpecKeeper:
        """Write every spec now (a KvminfoError if one cannot be), then keep them."""
        if not self._resources:
            return self
        for resource in self._resources:
            self._ensure(resource, starting=True)
        directories = [str(self._cdi_dir), *sorted({os.path.dirname(p) for p in self._nodes})]
        self._watcher = DirectoryWatcher(directories, self._on_event, "cdi-inotify", contents=True).start()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._worker.stop()
        if self._watcher is not None:
            self._watcher.stop()

    def wake(self) -> None:
        """Re-check now (a device node changed: a symlink may point elsewhere)."""
        self._wake.set()

    def _on_event(self, event: DirEvent) -> None:
        if event.change is Change.RESCAN or (event.directory == str(self._cdi_dir) and event.name in self._names) \
                or os.path.join(event.directory, event.name) in self._nodes:
            self._wake.set()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
            if stopping.is_set():
                return
            for resource in self._resources:
                failures = self._failures[resource.name]
                try:
                    self._ensure(resource, starting=False)
                except KvminfoError as err:
                    if failures.failures == 0:
                        self._on_state(resource, str(err))
                    suffix = failures.failed(str(err), time.monotonic())
                    if suffix is not None:
                        log.warning("%s; its slots are Unhealthy until it is written (retrying at once on a change "
                                    "in %s, else within %.0f s)%s", err, self._cdi_dir, self._poll_interval_s, suffix)
                    continue
                if failures.failures:
                    failures.succeeded()
                    self._on_state(resource, "")

    def _ensure(self, resource: ResourceConfig, starting: bool) -> None:
        path = spec_path(self._cdi_dir, resource)
        content = encode(build_spec(resource))
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError:
            current = b""
        if current == content:
            self._written[path] = content
            return
        if current is not None and _kind_in(path) not in (resource.effective_cdi_kind, ""):
            raise KvminfoError(f"{path}: holds a CDI spec of another kind; not overwriting it (set cdiKind)")
        try:
            self._cdi_dir.mkdir(mode=0o755, parents=True, exist_ok=True)  # runtimes read it world-readable
            write_atomic(path, content, mode=0o644)
        except OSError as err:
            raise KvminfoError(f"{path}: cannot write the CDI spec: {errno_text(err)}") from None
        if starting:
            log.info("wrote CDI spec %s (kind %s, cdiVersion %s)", path, resource.effective_cdi_kind,
                     json.loads(content)["cdiVersion"])
        else:
            log.warning("CDI spec %s was %s; wrote it again", path, "removed" if current is None else "changed")
        self._written[path] = content
