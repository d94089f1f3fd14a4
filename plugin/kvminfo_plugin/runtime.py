"""Wire the parts together for a config: health -> services -> sockets -> kubelet.

Used by `kvminfo device-plugin` and, in-process, by the tests and benchmarks.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from kvminfo.errors import KvminfoError
from kvminfo_plugin import cdi
from kvminfo_plugin.config import KUBEVIRT_RESOURCE, PluginConfig
from kvminfo_plugin.health import HealthMonitor, PathHealth
from kvminfo_plugin.metrics import MetricsServer, PluginMetrics
from kvminfo_plugin.pool import DevicePool
from kvminfo_plugin.registration import Supervisor
from kvminfo_plugin.server import ResourceService, SocketServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0  # in-flight Allocates may finish; well inside the kubelet's patience and our 5 s


class PluginRuntime:
    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        for warning in startup_warnings(config):
            log.warning("%s", warning)
        self.metrics = PluginMetrics()
        self._ensure_plugin_dir(config.plugin_dir)
        self.pools = [DevicePool(r, self.metrics) for r in config.resources]
        self.services = [ResourceService(p, self._on_streams_changed) for p in self.pools]
        self.servers = [SocketServer(s, config.plugin_dir / s.resource.socket_name) for s in self.services]
        self.supervisor = Supervisor(config.plugin_dir, self.servers, self.metrics, config.poll_interval_s)
        self.health = HealthMonitor(_paths_with_access(config), self._on_health_change, config.poll_interval_s)
        self.metrics_server: MetricsServer | None = None
        self._cdi_specs: list[Path] = []

    @staticmethod
    def _ensure_plugin_dir(plugin_dir: Path) -> None:
        # The kubelet creates it, but a DaemonSet may start first (or use a hostPath
        # without DirectoryOrCreate); waiting for it beats crash-looping.
        _ensure_dir(plugin_dir, 0o750, "--plugin-dir")

    def _on_streams_changed(self, resource: str, open_streams: int, stopping: bool) -> None:
        self.metrics.registered.labels(resource).set(1 if open_streams else 0)
        if open_streams == 0 and not stopping:
            self.supervisor.on_stream_closed(resource)

    def _on_health_change(self, health: PathHealth) -> None:
        for pool in self.pools:
            if health.path in pool.resource.devices:
                pool.set_path_health(health.path, health.healthy)
                log.info("%s is %s (%s): its %d slots of %s are %s", health.path,
                         "healthy" if health.healthy else "unhealthy", health.reason, pool.resource.slots,
                         pool.resource.name, "Healthy" if health.healthy else "Unhealthy")

    def run(self) -> None:
        """Serve until stop(); always cleans up (sockets, CDI specs) on the way out."""
        try:
            for health in self.health.current.values():
                self._on_health_change(health)
            if any(r.cdi for r in self.config.resources):
                # /var/run/cdi exists only once something wrote a spec; runtimes read it world-readable.
                _ensure_dir(self.config.cdi_dir, 0o755, "--cdi-dir")
            for resource in self.config.resources:
                if resource.cdi:
                    self._cdi_specs.append(cdi.write_spec(self.config.cdi_dir, resource))
            if self.config.metrics_port:
                self.metrics_server = MetricsServer(self.metrics, self.supervisor.health,
                                                    self.config.metrics_address, self.config.metrics_port).start()
            self.health.start()
            self.supervisor.run()
        finally:
            self._cleanup()

    def stop(self) -> None:
        """Safe from a signal handler and from any thread."""
        self.supervisor.stop()

    def _cleanup(self) -> None:
        for service in self.services:
            service.shutdown()
        for server in self.servers:
            server.stop(SHUTDOWN_GRACE_S)
            server.remove_socket()
        for path in self._cdi_specs:
            cdi.remove_spec(path)
        self.health.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("stopped; sockets%s removed", " and CDI specs" if self._cdi_specs else "")


def startup_warnings(config: PluginConfig) -> list[str]:
    """Legal but almost certainly unintended settings: worth a line, not a refusal."""
    warnings = []
    for resource in config.resources:
        if resource.name == KUBEVIRT_RESOURCE:
            warnings.append(f"resource {resource.name} is KubeVirt's own name: if KubeVirt's device plugin runs "
                            "on this node, the two replace each other in the kubelet")
        for path in resource.devices:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue  # missing nodes are the health check's business (Unhealthy until they appear)
            if not stat.S_ISCHR(mode):
                warnings.append(f"{path} (resource {resource.name}) exists but is not a character device; "
                                "its slots stay Unhealthy")
    return warnings


def _paths_with_access(config: PluginConfig) -> dict[str, str]:
    """Each device path once, checked with every access any resource grants on it."""
    access: dict[str, str] = {}
    for resource in config.resources:
        for path in resource.devices:
            access[path] = "".join(sorted(set(access.get(path, "")) | set(resource.permissions)))
    return access


def _ensure_dir(directory: Path, mode: int, flag: str) -> None:
    try:
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as err:
        raise KvminfoError(f"{flag} {directory}: cannot create: {err.strerror}") from None
