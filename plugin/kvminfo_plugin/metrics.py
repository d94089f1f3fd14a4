"""Prometheus metrics and /healthz over HTTP.

prometheus-client (the reference Python client) keeps the registry and writes
the text exposition format 0.0.4 (prometheus.io/docs/instrumenting/
exposition_formats); its WSGI app is served by the standard library's wsgiref
server, one thread per request (prometheus-client's ThreadingWSGIServer). Both
cost the device plugin RSS and start time (README "Performance": measured, and
kept over a hand-written exposition and HTTP responder).

What is ours: /healthz; GET and HEAD only (a scraper and a kubelet probe need no
more; anything else is 405 with ``Allow: GET, HEAD``); the serving loop, which
sleeps in select(2) with no timeout instead of socketserver's serve_forever()
(that one wakes every 0.5 s to look for shutdown(): two wake-ups a second on an
idle node, and up to 0.5 s added to SIGTERM -> exit).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kvminfo_plugin.config import ConfigError
from kvminfo_plugin.worker import Worker

log = logging.getLogger(__name__)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]

# What prometheus-client answers a scraper that asks for no other format (no
# OpenMetrics or text 1.0.0 in its Accept header): the text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT_S = 5.0  # a client that stalls holds its own thread this long at most


class PluginMetrics:
    """The plugin's own registry, so nothing from other libraries leaks in.

    Counters are exposed as ``<name>_total``, without prometheus-client's
    ``<name>_created`` series (a start time per counter and label set that no
    query of ours reads, and twice the series a scrape carries); read a sample
    back with ``registry.get_sample_value(name, labels)``."""

    def __init__(self) -> None:
        disable_created_metrics()  # the library's switch, process-wide: the plugin's process is ours
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

    def render(self) -> str:
        """Every family in the text exposition format 0.0.4 (prometheus-client's)."""
        return generate_latest(self.registry).decode()


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # socketserver.StreamRequestHandler: the connection's socket timeout
    # http.server answers a request line it cannot read as HTTP/0.9 would: a bare
    # HTML page without a status line. HTTP/0.9 is obsolete (RFC 9112 drops it) and
    # no scraper or probe speaks it: every answer, a 400 too, starts "HTTP/1.0 <code>".
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the event log


def _app(metrics: PluginMetrics, health: HealthCheck) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app (PEP 3333): /healthz here, every other path prometheus-client's
    exposition; HEAD is answered as GET without the body (RFC 9110 9.3.2)."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET, HEAD")])
            return [b"GET or HEAD\n"]
        if environ.get("PATH_INFO") == "/healthz":
            ok, why = health()
            status = "200 OK" if ok else "503 Service Unavailable"
            headers, body = [("Content-Type", "text/plain")], [why.encode() + b"\n"]
        else:
            answer: dict[str, Any] = {}
            body = list(metrics_app({**environ, "REQUEST_METHOD": "GET"},
                                    lambda status, headers, exc_info=None: answer.update(status=status, headers=headers)))
            status, headers = answer["status"], list(answer["headers"])
        headers.append(("Content-Length", str(sum(map(len, body)))))
        start_response(status, headers)
        return [] if method == "HEAD" else body

    return app


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path).

    One thread sleeps in select(2) on the listening socket and an eventfd, with
    no timeout (no idle wake-ups; ``stop()`` ends it at once) and hands each
    readable moment to the server's ``handle_request()``, which accepts and
    answers the connection in a thread of its own (a slow client holds up only
    itself)."""

    def __init__(self, metrics: PluginMetrics, health: HealthCheck, address: str, port: int) -> None:
        """Binds and listens now (serving starts with ``start()``), or raises a
        ConfigError naming the field to blame: metricsAddress (does not resolve, or is
        not this host's) or metricsPort (in use, or not ours to bind); the caller says
        which file or flag set it."""
        try:
            self._server = make_server(address, port, _app(metrics, health), ThreadingWSGIServer,
                                       handler_class=_QuietHandler)
        except socket.gaierror as err:  # the address did not resolve: the port is not to blame
            raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err.strerror}") from None
        except (OverflowError, UnicodeError) as err:  # a host name no resolver takes (a label over 63 bytes...)
            raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err}") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
                raise ConfigError("metricsAddress", f"{address!r}: cannot listen: {err.strerror}") from None
            raise ConfigError("metricsPort", f"cannot listen on {address}:{port}: {err.strerror}") from None
        self.address = self._server.server_address[0]
        self.port = self._server.server_port
        # Non-blocking accept: a client that connects and resets before accept() cannot
        # hang the loop (handle_request then returns at once).
        self._server.socket.settimeout(0)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._worker = Worker("metrics-http", self._serve, wake=lambda: os.eventfd_write(self._stop_fd, 1))

    def start(self) -> MetricsServer:
        self._worker.start()
        log.info("metrics and /healthz on http://%s:%d/", self.address, self.port)
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._server.server_close()
        os.close(self._stop_fd)

    def _serve(self, stopping: threading.Event) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._stop_fd, selectors.EVENT_READ)
            while not stopping.is_set():
                for key, _ in selector.select():  # blocks: no timeout
                    if key.fileobj is self._server.socket and not stopping.is_set():
                        self._server.handle_request()  # accepts; ThreadingMixIn answers in a thread
