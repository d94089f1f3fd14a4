"""Prometheus metrics and /healthz over HTTP (prometheus-client: the reference
client, already a dependency; it gives the exposition format and a WSGI app)."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kvminfo.errors import KvminfoError
from kvminfo_plugin.worker import Worker

log = logging.getLogger(__name__)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]


class PluginMetrics:
    """The plugin's own registry, so nothing from other libraries leaks in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registrations = Counter("kvminfo_plugin_registrations", "Register calls to the kubelet, by result",
                                     ["resource", "result"], registry=self.registry)
        self.allocations = Counter("kvminfo_plugin_allocations", "Containers given devices by Allocate",
                                   ["resource"], registry=self.registry)
        self.errors = Counter("kvminfo_plugin_errors", "Refused calls and failed operations, by kind",
                              ["resource", "kind"], registry=self.registry)
        self.devices = Gauge("kvminfo_plugin_devices", "Advertised slots by health",
                             ["resource", "health"], registry=self.registry)
        self.registered = Gauge("kvminfo_plugin_registered", "1 while the kubelet holds a ListAndWatch stream",
                                ["resource"], registry=self.registry)

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the event log


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path)."""

    def __init__(self, metrics: PluginMetrics, health: HealthCheck, address: str, port: int) -> None:
        metrics_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            if environ.get("PATH_INFO") == "/healthz":
                ok, why = health()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [why.encode() + b"\n"]
            return metrics_app(environ, start_response)

        try:
            self._server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except socket.gaierror as err:  # the address did not resolve: the port is not to blame
            raise KvminfoError(f"metricsAddress {address!r}: cannot resolve: {err.strerror}") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
                raise KvminfoError(f"metricsAddress {address!r}: cannot listen: {err.strerror}") from None
            raise KvminfoError(f"--metrics-port {port}: cannot listen on {address}:{port}: {err.strerror}") from None
        self.port = self._server.server_port
        # Non-blocking accept: a client that connects and resets before accept() cannot
        # hang the loop (handle_request then returns at once).
        self._server.socket.settimeout(0)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._worker = Worker("metrics-http", self._serve, wake=lambda: os.eventfd_write(self._stop_fd, 1))

    def _serve(self, stopping: threading.Event) -> None:
        """Sleep in select(2) on the listening socket and an eventfd, with no timeout:
        socketserver's serve_forever() wakes every 0.5 s to look for shutdown(), which
        made SIGTERM wait up to that long and cost an idle node two wakeups a second."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._stop_fd, selectors.EVENT_READ)
            while not stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._server.socket and not stopping.is_set():
                        self._server.handle_request()  # accepts; ThreadingMixIn answers in a thread

    def start(self) -> MetricsServer:
        self._worker.start()
        log.info("metrics and /healthz on http://%s:%d/", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._server.server_close()
        os.close(self._stop_fd)
