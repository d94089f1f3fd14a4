"""Prometheus metrics and /healthz over HTTP, in the Prometheus text exposition
format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats: one
``# HELP`` and ``# TYPE`` line per family, then ``name{label="value",...} value``
per sample; a counter's samples end in ``_total``; label values escape ``\\``,
``"`` and newline, help text ``\\`` and newline).

Written here rather than with prometheus-client: five labelled families need
a dozen lines, while importing prometheus-client (its exposition module pulls in
http.server, urllib.request and email) added 4.3 MiB to the plugin's RSS and
~25 ms to its start (bench/bench_footprint.py), more than the whole budget the
plugin has over a bare grpcio server. The tests read this output with
prometheus-client's own parser (a test dependency), so the format is checked
against the reference client. The HTTP side answers GET/HEAD with HTTP/1.0 and
closes: all a scraper or a kubelet probe needs.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import selectors
import socket
import threading
from collections.abc import Callable

from kvminfo_plugin.config import ConfigError
from kvminfo_plugin.worker import Worker

log = logging.getLogger(__name__)

# () -> (healthy?, one-line explanation)
HealthCheck = Callable[[], tuple[bool, str]]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192  # bytes of request line + headers read; the rest is ignored
CLIENT_TIMEOUT_S = 5.0


class Child:
    """One labelled sample. ``inc`` and ``set`` are thread-safe."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    @property
    def value(self) -> float:
        return self._value

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        self._value = float(value)


class Family:
    """A metric family: ``kind`` is "counter" or "gauge"; a counter's samples are
    exposed as ``<name>_total``."""

    def __init__(self, name: str, documentation: str, kind: str, labelnames: list[str]) -> None:
        self.name = f"{name}_total" if kind == "counter" else name
        self.documentation = documentation
        self.kind = kind
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values needed, got {len(values)}")
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.setdefault(values, Child())
        return child

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.documentation)}", f"# TYPE {self.name} {self.kind}"]
        for values, child in sorted(self._children.items()):
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(zip(self.labelnames, values, strict=True)))
            lines.append(f"{self.name}{{{labels}}} {_number(child.value)}")
        return "\n".join(lines) + "\n"


class PluginMetrics:
    """The plugin's own metrics."""

    def __init__(self) -> None:
        self.registrations = Family("kvminfo_plugin_registrations", "Register calls to the kubelet, by result",
                                    "counter", ["resource", "result"])
        self.allocations = Family("kvminfo_plugin_allocations", "Containers given devices by Allocate",
                                  "counter", ["resource"])
        self.errors = Family("kvminfo_plugin_errors", "Refused calls and failed operations, by kind",
                             "counter", ["resource", "kind"])
        self.devices = Family("kvminfo_plugin_devices", "Advertised slots by health", "gauge", ["resource", "health"])
        self.registered = Family("kvminfo_plugin_registered", "1 while the kubelet holds a ListAndWatch stream",
                                 "gauge", ["resource"])
        self.families = [self.registrations, self.allocations, self.errors, self.devices, self.registered]

    def set_devices(self, resource: str, healthy: int, unhealthy: int) -> None:
        self.devices.labels(resource, "Healthy").set(healthy)
        self.devices.labels(resource, "Unhealthy").set(unhealthy)

    def render(self) -> str:
        """Every family in the text exposition format."""
        return "".join(family.render() for family in self.families)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsServer:
    """GET /healthz (200 ok / 503 reason) and GET /metrics (and any other path).

    One thread sleeps in select(2) on the listening socket and an eventfd, with
    no timeout (no idle wakeups; ``stop()`` ends it at once); each connection is
    answered in a thread of its own, so a slow client holds up only itself."""

    def __init__(self, metrics: PluginMetrics, health: HealthCheck, address: str, port: int) -> None:
        self._metrics = metrics
        self._health = health
        self._socket = _listen(address, port)
        self.address = self._socket.getsockname()[0]
        self.port = self._socket.getsockname()[1]
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._worker = Worker("metrics-http", self._serve, wake=lambda: os.eventfd_write(self._stop_fd, 1))

    def start(self) -> MetricsServer:
        self._worker.start()
        log.info("metrics and /healthz on http://%s:%d/", self.address, self.port)
        return self

    def stop(self) -> None:
        self._worker.stop()
        self._socket.close()
        os.close(self._stop_fd)

    def _serve(self, stopping: threading.Event) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._socket, selectors.EVENT_READ)
            selector.register(self._stop_fd, selectors.EVENT_READ)
            while not stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._socket and not stopping.is_set():
                        self._accept()

    def _accept(self) -> None:
        try:
            conn, _ = self._socket.accept()
        except OSError:  # gone before accept (non-blocking: never waits)
            return
        threading.Thread(target=self._answer, args=(conn,), name="metrics-http-client", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(CLIENT_TIMEOUT_S)
                conn.sendall(self.response(_read_head(conn)))
            except OSError:
                pass  # the client went away or stalled past the timeout

    def response(self, head: bytes) -> bytes:
        """The whole HTTP/1.0 answer to a request whose line and headers are ``head``."""
        parts = head.split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _http(400, "Bad Request", b"bad request\n", "text/plain")
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _http(405, "Method Not Allowed", b"GET or HEAD\n", "text/plain", extra="Allow: GET, HEAD\r\n")
        if path == b"/healthz":
            ok, why = self._health()
            status, reason = (200, "OK") if ok else (503, "Service Unavailable")
            answer = _http(status, reason, why.encode() + b"\n", "text/plain")
        else:
            answer = _http(200, "OK", self._metrics.render().encode(), CONTENT_TYPE)
        return answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else answer


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _http(status: int, reason: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode() + body


def _listen(address: str, port: int) -> socket.socket:
    """A listening TCP socket (non-blocking accept), or a ConfigError naming the field
    to blame: metricsAddress (does not resolve, or is not this host's) or metricsPort
    (in use, or not ours to bind); the caller says which file or flag set it."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(address or "0.0.0.0", port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:  # the address did not resolve: the port is not to blame
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err.strerror}") from None
    except (OverflowError, UnicodeError) as err:
        raise ConfigError("metricsAddress", f"{address!r}: cannot resolve: {err}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait out TIME_WAIT
        sock.bind(sockaddr)
        sock.listen(16)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRNOTAVAIL:  # resolves, but to no address of this host
            raise ConfigError("metricsAddress", f"{address!r}: cannot listen: {err.strerror}") from None
        raise ConfigError("metricsPort", f"cannot listen on {address}:{port}: {err.strerror}") from None
    return sock
