"""The plugin's metrics (prometheus-client Counter, Gauge and Info on a registry of
its own) and the HTTP port for /metrics and /healthz, served from start.

prometheus-client (the reference Python client) keeps the values and writes the
text exposition format (prometheus.io/docs/instrumenting/exposition_formats);
its WSGI app answers on wsgiref's server, one thread per request
(prometheus-client's ThreadingWSGIServer). What is ours: /healthz; GET and HEAD
only (a scraper and a kubelet probe need no more; anything else is 405 with
``Allow: GET, HEAD``).
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kvminfo_plugin.config import ConfigError
from kvminfo_plugin.worker import ReadableWorker

log = logging.getLogger(__name__)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]

# What prometheus-client answers a scraper that asks for no other format (no
# OpenMetrics or text 1.0.0 in its Accept header): the text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT_S = 5.0  # a client that stalls holds its own thread this long at most
DISTRIBUTION = "kvminfo"  # the installed distribution whose version build_info reports


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


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
        Info("kvminfo_plugin_build", "The running plugin's version", registry=self.registry).info({"version": _version()})
        for resource in resources:  # a sample from start: an alert on == 0 fires before the first registration too
            self.registered.labels(resource).set(0)

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path).

    The port is bound and listening from construction. ``start()`` starts one
    thread which sleeps until the listening socket is readable (no idle
    wake-ups; ``stop()`` ends it at once) and hands each readable moment to the
    server's ``handle_request()``, which accepts and answers the connection in a
    thread of its own (a slow client holds up only itself)."""

    def __init__(self, metrics: PluginMetrics, health: HealthCheck, address: str, port: int) -> None:
        """Binds and listens now, or raises a ConfigError naming the field to blame:
        metricsAddress (does not resolve, or is not this host's) or metricsPort (in
        use, or not ours to bind); the caller says which file or flag set it."""
        self._server = _bind(address, port)
        self._server.set_app(_app(metrics.registry, health))
        self.address, self.port = self._server.server_address[:2]
        # Non-blocking accept: a client that connects and resets before accept() cannot
        # hang the loop (handle_request then returns at once).
        self._server.socket.settimeout(0)
        self._worker = ReadableWorker("metrics-http", self._server.fileno(), self._server.handle_request)

    def start(self) -> MetricsServer:
        self._worker.start()
        log.info("metrics and /healthz on http://%s:%d/", self.address, self.port)
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._server.server_close()


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # socketserver.StreamRequestHandler: the connection's socket timeout
    # http.server answers a request line it cannot read as HTTP/0.9 would: a bare
    # HTML page without a status line. HTTP/0.9 is obsolete (RFC 9112 drops it) and
    # no scraper or probe speaks it: every answer, a 400 too, starts "HTTP/1.0 <code>".
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the event log


class _Server(ThreadingWSGIServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind would also set server_name to socket.getfqdn(address):
        # a reverse DNS lookup that can wait on an unreachable DNS server at start, for
        # a value (PEP 3333's SERVER_NAME) neither app reads. The bound address serves.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()


def _bind(address: str, port: int) -> _Server:
    """The listening server (IPv4, SO_REUSEADDR, socketserver's backlog of 5), or the ConfigError to say."""
    try:
        return _Server((address, port), _QuietHandler)
    except socket.gaierror as err:  # the address did not resolve: the port is not to blame
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err.strerror}") from None
    except (OverflowError, UnicodeError) as err:  # a host name no resolver takes (a label over 63 bytes...)
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err}") from None
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
            raise ConfigError("metricsAddress", f"{address!r}: cannot listen: {err.strerror}") from None
        raise ConfigError("metricsPort", f"cannot listen on {address}:{port}: {err.strerror}") from None


def _app(registry: CollectorRegistry, health: HealthCheck) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app (PEP 3333): /healthz here, every other path prometheus-client's
    exposition; HEAD is answered as GET without the body (RFC 9110 9.3.2)."""
    metrics_app = make_wsgi_app(registry)

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
