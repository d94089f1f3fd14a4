"""The plugin's metrics, counted in plain numbers, and the HTTP port for
/metrics and /healthz.

The kubelet needs only the gRPC server and Register, so nothing here imports
prometheus-client or the HTTP server: the counters are plain numbers that the
pool, the supervisor and the services bump from any thread, and the port is
bound (refusing a bad metricsAddress/metricsPort before anything starts) but
served only once the first round of Register calls is done
(``MetricsServer.serve_now``) or ``START_DEFER_MAX_S`` has passed. Then
``kvminfo_plugin.exposition`` is imported: prometheus-client (the reference
Python client) reads these numbers at each scrape through a custom collector
and writes the text format 0.0.4; its WSGI app answers on the bound socket. A
connection made before that waits in the listen backlog; no count is lost,
because the numbers are kept from the start.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from kvminfo_plugin.config import ConfigError
from kvminfo_plugin.worker import Worker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]

# What prometheus-client answers a scraper that asks for no other format (no
# OpenMetrics or text 1.0.0 in its Accept header): the text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# socketserver.TCPServer.request_queue_size: the backlog the server used to listen with.
LISTEN_BACKLOG = 5
# Serve /metrics and /healthz at the latest this long after start(deferred=True),
# even if the first Register is still waiting for a kubelet that does not answer
# (REGISTER_TIMEOUT_S is 10 s; the DaemonSet's liveness probe starts after 5 s).
START_DEFER_MAX_S = 1.0


class Sample:
    """One label set's value. ``inc`` and ``set`` are safe from any thread."""

    __slots__ = ("value", "_lock")

    def __init__(self, lock: threading.Lock) -> None:
        self.value = 0.0
        self._lock = lock

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:  # += is a read and a write: two threads could lose one
            self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)  # one store: atomic


class Family:
    """A metric family (Prometheus' data model: one name, one type, labelled
    samples). A counter's ``name`` is without ``_total``; the exposition adds it."""

    def __init__(self, name: str, documentation: str, kind: Literal["counter", "gauge"], labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, ...], Sample] = {}

    def labels(self, *values: str) -> Sample:
        """The sample of this label set, created at 0 on first use (and exposed from then on)."""
        sample = self._samples.get(values)
        if sample is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values!r}")
            with self._lock:
                sample = self._samples.setdefault(values, Sample(self._lock))
        return sample

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        """(label values, value) of every label set, in the order they were first used."""
        with self._lock:
            return [(values, sample.value) for values, sample in self._samples.items()]


class PluginMetrics:
    """The plugin's own families, nothing from other libraries. Read a sample
    back with ``registry.get_sample_value(name, labels)`` (counters as
    ``<name>_total``); there is no ``<name>_created`` series."""

    def __init__(self) -> None:
        self.registrations = Family("kvminfo_plugin_registrations", "Register calls to the kubelet, by result",
                                    "counter", ("resource", "result"))
        self.allocations = Family("kvminfo_plugin_allocations", "Containers given devices by Allocate",
                                  "counter", ("resource",))
        self.errors = Family("kvminfo_plugin_errors", "Refused calls and failed operations, by kind",
                             "counter", ("resource", "kind"))
        self.devices = Family("kvminfo_plugin_devices", "Advertised slots by health", "gauge", ("resource", "health"))
        self.registered = Family("kvminfo_plugin_registered", "1 while the kubelet holds a ListAndWatch stream",
                                 "gauge", ("resource",))
        self.families = (self.registrations, self.allocations, self.errors, self.devices, self.registered)

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)

    @cached_property
    def registry(self) -> CollectorRegistry:
        """prometheus-client's registry reading these families at each collect (imports it)."""
        from kvminfo_plugin.exposition import registry_for

        return registry_for(self.families)

    def render(self) -> str:
        """Every family in the text exposition format 0.0.4 (prometheus-client's)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path).

    The port is bound and listening from construction. ``start()`` starts one
    thread which (once it may serve) imports the HTTP half, then sleeps in
    select(2) on the listening socket and an eventfd, with no timeout (no idle
    wake-ups; ``stop()`` ends it at once) and hands each readable moment to the
    server's ``handle_request()``, which accepts and answers the connection in a
    thread of its own (a slow client holds up only itself)."""

    def __init__(self, metrics: PluginMetrics, health: HealthCheck, address: str, port: int) -> None:
        """Binds and listens now (serving starts with ``start()``), or raises a
        ConfigError naming the field to blame: metricsAddress (does not resolve, or is
        not this host's) or metricsPort (in use, or not ours to bind); the caller says
        which file or flag set it."""
        self._metrics = metrics
        self._health = health
        self._socket = _listen(address, port)
        self.address, self.port = self._socket.getsockname()[:2]
        # Non-blocking accept: a client that connects and resets before accept() cannot
        # hang the loop (handle_request then returns at once).
        self._socket.settimeout(0)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._go = threading.Event()
        self._worker = Worker("metrics-http", self._serve, wake=self._wake)

    def start(self, deferred: bool = False) -> MetricsServer:
        """Serve now, or (``deferred``) once ``serve_now()`` is called or
        START_DEFER_MAX_S has passed; connections meanwhile wait in the backlog."""
        if not deferred:
            self._go.set()
        self._worker.start()
        log.info("metrics and /healthz on http://%s:%d/", self.address, self.port)
        return self

    def serve_now(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._worker.stop()
        self._socket.close()
        os.close(self._stop_fd)

    def _wake(self) -> None:
        self._go.set()
        os.eventfd_write(self._stop_fd, 1)

    def _serve(self, stopping: threading.Event) -> None:
        self._go.wait(START_DEFER_MAX_S)
        if stopping.is_set():
            return
        try:
            from kvminfo_plugin.exposition import http_server

            server = http_server(self._socket, self._metrics.registry, self._health)
        except Exception as err:  # a broken install: say it once; a closed port fails the probes at once
            log.error("metrics and /healthz cannot be served on %s:%d: %s: %s; closing the port",
                      self.address, self.port, type(err).__name__, err)
            self._socket.close()
            return
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._socket, selectors.EVENT_READ)
                selector.register(self._stop_fd, selectors.EVENT_READ)
                while not stopping.is_set():
                    for key, _ in selector.select():  # blocks: no timeout
                        if key.fileobj is self._socket and not stopping.is_set():
                            server.handle_request()  # accepts; ThreadingMixIn answers in a thread
        finally:
            server.server_close()


def _listen(address: str, port: int) -> socket.socket:
    """A listening TCP socket, as socketserver.TCPServer makes one (IPv4,
    SO_REUSEADDR, a backlog of 5), or the ConfigError to say."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
    except socket.gaierror as err:  # the address did not resolve: the port is not to blame
        sock.close()
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err.strerror}") from None
    except (OverflowError, UnicodeError) as err:  # a host name no resolver takes (a label over 63 bytes...)
        sock.close()
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err}") from None
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
            raise ConfigError("metricsAddress", f"{address!r}: cannot listen: {err.strerror}") from None
        raise ConfigError("metricsPort", f"cannot listen on {address}:{port}: {err.strerror}") from None
    return sock
