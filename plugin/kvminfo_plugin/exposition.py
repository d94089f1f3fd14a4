"""/metrics and /healthz over HTTP: the plugin's families exposed by
prometheus-client, served by the standard library's wsgiref.

prometheus-client (the reference Python client) reads the families at each
scrape through a custom collector (its documented way to expose values kept
elsewhere: a ``collect()`` yielding CounterMetricFamily/GaugeMetricFamily) and
writes the text exposition format 0.0.4 (prometheus.io/docs/instrumenting/
exposition_formats). Its WSGI app is served by wsgiref's server, one thread per
request (prometheus-client's ThreadingWSGIServer), on the socket
``kvminfo_plugin.telemetry.metrics`` bound at start. Importing this module costs the
plugin ~3 MiB and ~20 ms (README "Footprint"): it is imported only after the
first round of Register calls.

What is ours: /healthz; GET and HEAD only (a scraper and a kubelet probe need no
more; anything else is 405 with ``Allow: GET, HEAD``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from kvminfo_plugin.telemetry.metrics import Family, HealthCheck

StartResponse = Callable[..., Any]

CLIENT_TIMEOUT_S = 5.0  # a client that stalls holds its own thread this long at most


class FamiliesCollector:
    """A prometheus-client custom collector over the plugin's families."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = tuple(families)

    def _metric(self, family: Family) -> CounterMetricFamily | GaugeMetricFamily:
        if family.kind == "counter":
            return CounterMetricFamily(family.name, family.documentation, labels=family.labelnames)
        return GaugeMetricFamily(family.name, family.documentation, labels=family.labelnames)

    def describe(self) -> Iterator[Metric]:
        """The names, without samples (the registry checks them for clashes)."""
        return (self._metric(family) for family in self._families)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            metric = self._metric(family)
            for values, value in family.samples():
                metric.add_metric(values, value)
            yield metric


def registry_for(families: Iterable[Family]) -> CollectorRegistry:
    """A registry of its own holding only these families (nothing from other libraries)."""
    registry = CollectorRegistry()
    registry.register(FamiliesCollector(families))
    return registry


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # socketserver.StreamRequestHandler: the connection's socket timeout
    # http.server answers a request line it cannot read as HTTP/0.9 would: a bare
    # HTML page without a status line. HTTP/0.9 is obsolete (RFC 9112 drops it) and
    # no scraper or probe speaks it: every answer, a 400 too, starts "HTTP/1.0 <code>".
    default_request_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes every few seconds would drown the event log


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


class _BoundServer(ThreadingWSGIServer):
    """prometheus-client's threading WSGI server on a socket that is already bound
    and listening (socketserver binds its own in server_bind/server_activate)."""

    def __init__(self, bound: socket.socket) -> None:
        self._bound = bound
        super().__init__(bound.getsockname()[:2], _QuietHandler)

    def server_bind(self) -> None:
        self.socket.close()  # the one TCPServer made
        self.socket = self._bound
        self.server_address = self.socket.getsockname()
        # What HTTPServer.server_bind and WSGIServer.server_bind set after binding, but
        # SERVER_NAME (PEP 3333: a host name or address) is the bound address, not
        # socket.getfqdn()'s reverse lookup of it: that loads the resolver's NSS modules
        # (+0.6 MiB) and can wait on a DNS server, for a value neither app reads.
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port
        self.setup_environ()

    def server_activate(self) -> None:
        pass  # listening since it was bound


def http_server(bound: socket.socket, registry: CollectorRegistry, health: HealthCheck) -> ThreadingWSGIServer:
    """The server answering on ``bound``; the caller calls its handle_request() when
    the socket is readable (it never serves by itself) and server_close() at the end."""
    server = _BoundServer(bound)
    server.set_app(_app(registry, health))
    return server
