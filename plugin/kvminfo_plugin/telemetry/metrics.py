"""The plugin's metrics: prometheus-client Counter, Gauge and Info on a registry of its own,
served with /healthz by kvminfo.common.metrics_http (the one metrics server of every process)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics

from kvminfo.common.version import build_info


class PluginMetrics:
    """The plugin's series, on a registry of their own (nothing from other
    libraries). Read a sample back with ``registry.get_sample_value(name,
    labels)`` (counters as ``<name>_total``)."""

    def __init__(self, resources: Iterable[str] = ()) -> None:
        # prometheus-client's switch for the <name>_created series of counters: the
        # plugin never had them, and a scraper's rate() needs only _total.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.registrations = Counter("kvminfo_plugin_registrations", "Register calls to the kubelet, by result",
                                     ("resource", "result"), registry=self.registry)
        self.allocations = Counter("kvminfo_plugin_allocations", "Containers given devices by Allocate",
                                   ("resource",), registry=self.registry)
        self.errors = Counter("kvminfo_plugin_errors", "Refused calls and failed operations, by kind",
                              ("resource", "kind"), registry=self.registry)
        self.devices = Gauge("kvminfo_plugin_devices", "Advertised slots by health", ("resource", "health"),
                             registry=self.registry)
        self.registered = Gauge("kvminfo_plugin_registered", "1 while the kubelet holds a ListAndWatch stream",
                                ("resource",), registry=self.registry)
        Info("kvminfo_plugin_build", "The running plugin's version and the commit it was built from",
             registry=self.registry).info(build_info())
        for resource in resources:  # a sample from start: an alert on == 0 fires before the first registration too
            self.registered.labels(resource).set(0)

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)
