"""Wire the parts together for a config: health -> services -> sockets -> kubelet.

Used by `kvminfo device-plugin` and, in-process, by the tests and benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kvminfo.common.metrics_http import ADDRESS, BindError, MetricsServer
from kvminfo_plugin.config import KUBEVIRT_RESOURCE, ConfigError, PluginConfig, ResourceConfig
from kvminfo_plugin.devices.cdi import SpecKeeper
from kvminfo_plugin.devices.health import HealthMonitor, PathHealth
from kvminfo_plugin.devices.pool import DevicePool
from kvminfo_plugin.kubelet.registration import Supervisor
from kvminfo_plugin.kubelet.server import ResourceService, SocketServer
from kvminfo_plugin.telemetry.metrics import PluginMetrics

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.0  # in-flight Allocates may finish; well inside the kubelet's patience and our 5 s


class PluginRuntime:
    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.metrics = PluginMetrics(r.name for r in config.resources)
        # Bound first: an unusable address or a port in use is a config error (a
        # ConfigError), refused before anything is logged, created or started.
        self.metrics_server: MetricsServer | None = None
        if config.metrics_port:
            try:
                self.metrics_server = MetricsServer(self.metrics.registry, self._supervisor_health,
                                                    config.metrics_address, config.metrics_port)
            except BindError as err:
                raise ConfigError("metricsAddress" if err.field == ADDRESS else "metricsPort", err.problem) from None
        try:
            self._ensure_plugin_dir(config.plugin_dir)
        except BaseException:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            raise
        for warning in startup_warnings(config):
            log.warning("%s", warning)
        self.pools = [DevicePool(r, self.metrics) for r in config.resources]
        self.services = [ResourceService(p, self._on_streams_changed) for p in self.pools]
        self.servers = [SocketServer(s, config.plugin_dir / s.resource.socket_name) for s in self.services]
        self.supervisor = Supervisor(config.plugin_dir, self.servers, self.metrics, config.poll_interval_s)
        # No timer of its own: the supervisor's slow poll runs the health re-check too.
        self.health = HealthMonitor(_paths_with_access(config), self._on_health_change, None)
        self.cdi_specs: SpecKeeper | None = None
        if any(r.cdi for r in config.resources):
            self.cdi_specs = SpecKeeper(config.cdi_dir, config.resources, config.poll_interval_s, self._on_spec_state)

    def _supervisor_health(self) -> tuple[bool, str]:
        return self.supervisor.health()

    @staticmethod
    def _ensure_plugin_dir(plugin_dir: Path) -> None:
        # The kubelet creates it, but a DaemonSet may start first (or use a hostPath
        # without DirectoryOrCreate); waiting for it beats crash-looping.
        _ensure_dir(plugin_dir, 0o750, "pluginDir")

    def _on_streams_changed(self, resource: str, open_streams: int, stopping: bool, opened_at: float) -> None:
        self.metrics.registered.labels(resource).set(1 if open_streams else 0)
        if open_streams == 0 and not stopping:
            self.supervisor.on_stream_closed(resource, opened_at)

    def _on_health_change(self, health: PathHealth, starting: bool = False) -> None:
        for pool in self.pools:
            if health.path in pool.resource.devices:
                healthy, total = pool.set_path_health(health.path, health.healthy)
                if starting and health.healthy:
                    continue  # the start-up line lists the resources; only problems are news
                log.log(logging.INFO if health.healthy else logging.WARNING, "%s %s (%s); %s: %d of %d slots Healthy",
                        health.path, "is back" if health.healthy and not starting else
                        "is healthy" if health.healthy else "is unhealthy", health.reason, pool.resource.name,
                        healthy, total)
        if self.cdi_specs is not None:
            self.cdi_specs.wake()  # a symlinked node may point elsewhere now

    def _on_spec_state(self, resource: ResourceConfig, problem: str) -> None:
        for pool in self.pools:
            if pool.resource is resource:
                healthy, total = pool.set_blocked(problem)
                log.log(logging.WARNING if problem else logging.INFO, "%s: %d of %d slots Healthy (%s)", resource.name,
                        healthy, total, "its CDI spec cannot be written" if problem else "its CDI spec is back")

    def run(self) -> None:
        """Serve until stop(). On the way out: sockets still ours are removed; CDI
        specs stay (containers of admitted pods may restart while we are away)."""
        try:
            for health in self.health.current.values():
                self._on_health_change(health, starting=True)
            if self.cdi_specs is not None:
                self.cdi_specs.start()
            if self.metrics_server is not None:
                self.metrics_server.start()
            self.health.start()
            self.supervisor.run(on_poll=self.health.check_all)
        finally:
            self._cleanup()

    def stop(self) -> None:
        """Safe from a signal handler and from any thread."""
        self.supervisor.stop()

    def _cleanup(self) -> None:
        for service in self.services:
            service.shutdown()
        left = []
        for server in self.servers:
            server.stop(SHUTDOWN_GRACE_S)
            if not server.remove_socket() and server.socket_path.exists():
                left.append(server.socket_path.name)
        if self.cdi_specs is not None:
            self.cdi_specs.stop()
        self.health.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("stopped; sockets removed%s%s", f" except {', '.join(left)} (another process's now)" if left else "",
                 f"; CDI specs kept in {self.config.cdi_dir} (remove on uninstall: --remove-cdi-specs)"
                 if any(r.cdi for r in self.config.resources) else "")


def startup_warnings(config: PluginConfig) -> list[str]:
    """Legal but almost certainly unintended settings: worth a line, not a refusal.
    (A node that is missing or no character device is reported by the first health check.)"""
    return [f"resource {r.name} is KubeVirt's own name: if KubeVirt's device plugin runs on this node, "
            "the two replace each other in the kubelet" for r in config.resources if r.name == KUBEVIRT_RESOURCE]


def _paths_with_access(config: PluginConfig) -> dict[str, str]:
    """Each device path once, checked with every access any resource grants on it."""
    access: dict[str, str] = {}
    for resource in config.resources:
        for path in resource.devices:
            access[path] = "".join(sorted(set(access.get(path, "")) | set(resource.permissions)))
    return access


def _ensure_dir(directory: Path, mode: int, field_name: str) -> None:
    """Create ``directory`` if missing; a ConfigError naming ``field_name`` (the caller
    says which file or flag set it) when it cannot be, or is something else."""
    try:
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
    except FileExistsError:  # mkdir(exist_ok) says so for a file or a dangling symlink in its place
        raise ConfigError(field_name, f"{directory}: not a directory") from None
    except NotADirectoryError:  # a file where a parent should be
        raise ConfigError(field_name, f"{directory}: a parent is not a directory") from None
    except OSError as err:
        raise ConfigError(field_name, f"{directory}: cannot create: {err.strerror}") from None
