"""The one HTTP server for /metrics and /healthz of every long-running process (the device
plugin, `kvminfo features-file --interval`, `kvminfo publish --interval`), served from start.

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
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kvminfo.common.errors import KvminfoError, one_line
from kvminfo.common.logsetup import METRICS_LOGGER
from kvminfo.common.threads import ReadableWorker

log = logging.getLogger(METRICS_LOGGER)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]

# What prometheus-client answers a scraper that asks for no other format (no
# OpenMetrics or text 1.0.0 in its Accept header): the text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT_S = 5.0  # a client that stalls holds its own thread this long at most
ADDRESS, PORT = "address", "port"  # BindError.field: which setting is to blame


class BindError(KvminfoError):
    """The metrics address or port cannot be listened on. ``field`` is ADDRESS or PORT; the
    caller names its own setting (the plugin's metricsAddress/metricsPort, a flag)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path).

    The port is bound and listening from construction. ``start()`` starts one
    thread which sleeps until the listening socket is readable (no idle
    wake-ups; ``stop()`` ends it at once) and hands each readable moment to the
    server's ``handle_request()``, which accepts and answers the connection in a
    thread of its own (a slow client holds up only itself)."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck, address: str, port: int) -> None:
        """Binds and listens now, or raises a BindError naming the setting to blame:
        ADDRESS (does not resolve, or is not this host's) or PORT (in use, or not
        ours to bind); the caller says which file or flag set it."""
        self._server = _bind(address, port)
        self._server.set_app(_app(registry, health))
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback of whatever ended a request to stderr; a client
        # that resets while it is answered (a probe that timed out, garbage then a close) is
        # no event of ours: one debug line, never a traceback in the process's log.
        log.debug("client %s: %s", client_address, one_line(sys.exc_info()[1]))


def _bind(address: str, port: int) -> _Server:
    """The listening server (IPv4, SO_REUSEADDR, socketserver's backlog of 5), or the BindError to say."""
    try:
        return _Server((address, port), _QuietHandler)
    except socket.gaierror as err:  # the address did not resolve: the port is not to blame
        raise BindError(ADDRESS, f"{address!r}: cannot resolve: {err.strerror}") from None
    except (OverflowError, UnicodeError) as err:  # a host name no resolver takes (a label over 63 bytes...)
        raise BindError(ADDRESS, f"{address!r}: cannot resolve: {err}") from None
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
            raise BindError(ADDRESS, f"{address!r}: cannot listen: {err.strerror}") from None
        raise BindError(PORT, f"cannot listen on {address}:{port}: {err.strerror}") from None


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
