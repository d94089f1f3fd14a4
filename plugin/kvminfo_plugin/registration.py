"""Keep every resource served and registered with the kubelet, whatever the kubelet does.

- Serve first, then Register (the kubelet dials back during Register).
- Kubelet restart: it deletes every socket in the plugin dir and serves a new
  kubelet.sock. inotify on the plugin dir sees our socket go (serve again) and
  kubelet.sock appear (register again at once).
- The kubelet ended ListAndWatch and no new stream came: register again.
- No kubelet yet, or Register failed: retry with capped exponential backoff,
  one log line per failure; never exit because of the kubelet.
A slow poll re-checks the sockets in case an inotify event was missed.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kvminfo.errors import KvminfoError
from kvminfo_plugin.dirwatch import Change, DirectoryWatcher, DirEvent
from kvminfo_plugin.metrics import PluginMetrics
from kvminfo_plugin.server import SocketServer, plugin_options
from kvminfo_plugin.v1beta1 import api_pb2 as api
from kvminfo_plugin.v1beta1 import api_pb2_grpc as api_grpc

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
REGISTER_TIMEOUT_S = 10.0  # the kubelet dials us back within Register (its own dial timeout is 10 s)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# Serving fails when the plugin dir is gone; its reappearance is an inotify event,
# so retrying blindly can be slow: it is only the fallback.
SERVE_BACKOFF_FIRST_S = 1.0
# After the kubelet ends a stream, how long a new one may take before we
# register again. A re-registration itself makes the kubelet drop the old
# stream, so re-registering at once on every end would loop.
STREAM_GRACE_S = 0.25


@dataclass
class _ResourceState:
    server: SocketServer
    needs_register: bool = True
    next_attempt: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    failures: int = 0
    stream_lost_at: float | None = None
    registered_at: float | None = None
    last_error: str = field(default="not registered yet")
    serve_retry_at: float = 0.0
    serve_backoff_s: float = SERVE_BACKOFF_FIRST_S


class Supervisor:
    """Runs the serve/register loop in the calling thread until ``stop()``."""

    def __init__(self, plugin_dir: Path, servers: list[SocketServer], metrics: PluginMetrics,
                 poll_interval_s: float = 5.0) -> None:
        self.plugin_dir = plugin_dir
        self.kubelet_socket = plugin_dir / KUBELET_SOCKET
        self._metrics = metrics
        self._stop = threading.Event()
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._states = {s.service.resource.name: _ResourceState(server=s) for s in servers}
        self._socket_names = {s.socket_path.name for s in servers}
        self._watcher = DirectoryWatcher([str(plugin_dir)], self._on_dir_event, "plugin-dir-inotify")

    # ---- events from other threads (and signal handlers) --------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_dir_event(self, event: DirEvent) -> None:
        with self._lock:
            if event.change is Change.RESCAN:  # the plugin dir itself went away or came back: serve again now
                for state in self._states.values():
                    state.serve_retry_at, state.serve_backoff_s = 0.0, SERVE_BACKOFF_FIRST_S
            elif event.name == KUBELET_SOCKET and event.change is Change.APPEARED:
                log.info("kubelet.sock appeared in %s; registering", self.plugin_dir)
                for state in self._states.values():
                    state.needs_register, state.next_attempt, state.backoff_s = True, 0.0, BACKOFF_FIRST_S
            elif event.name in self._socket_names and event.change is Change.VANISHED:
                pass  # the loop checks whether it is really gone: our own serve() deletes it too
            else:
                return
        self._wake.set()

    def on_stream_closed(self, resource: str) -> None:
        """The last ListAndWatch stream of ``resource`` ended while we keep running."""
        with self._lock:
            state = self._states.get(resource)
            # Also while a Register is in flight: the stream it opens may end before
            # _register() sees its answer, and that loss must not be forgotten.
            if state is not None:
                state.stream_lost_at = time.monotonic()
        log.info("kubelet ended the ListAndWatch stream of %s", resource)
        self._wake.set()

    # ---- status for /healthz ------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        with self._lock:
            bad = [f"{name}: {st.last_error}" for name, st in self._states.items() if st.needs_register or not st.server.serving]
        return (not bad, "; ".join(bad) if bad else "ok: every resource served and registered")

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        self._watcher.start()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self._step(time.monotonic())
                self._wake.wait(self._sleep_time(time.monotonic()))
        finally:
            self._watcher.stop()

    def _step(self, now: float) -> None:
        for name, state in self._states.items():
            if self._stop.is_set():
                return
            server = state.server
            if not server.serving or not _is_socket(server.socket_path):
                with self._lock:
                    if now < state.serve_retry_at:
                        continue
                if server.serving:
                    log.info("socket %s was removed (kubelet restart?); serving again", server.socket_path)
                try:
                    server.serve()
                except KvminfoError as err:
                    if state.registered_at is None:
                        raise  # cannot serve at all: an operator error, stop with one line
                    with self._lock:  # e.g. the plugin dir was removed: its return wakes us
                        retry_in = state.serve_backoff_s
                        state.serve_retry_at = now + retry_in
                        state.serve_backoff_s = min(retry_in * 2, BACKOFF_MAX_S)
                        state.stream_lost_at = None  # serving again registers anyway
                    log.warning("%s; retrying in %.1f s or when the directory is back", err, retry_in)
                    continue
                log.info("serving %s on %s", name, server.socket_path)
                with self._lock:
                    state.needs_register, state.next_attempt, state.backoff_s = True, 0.0, BACKOFF_FIRST_S
                    state.serve_retry_at, state.serve_backoff_s = 0.0, SERVE_BACKOFF_FIRST_S
            with self._lock:
                lost = state.stream_lost_at
                if lost is not None and server.service.open_streams > 0:
                    state.stream_lost_at = lost = None  # a new stream came: nothing to do
                if lost is not None and now - lost >= STREAM_GRACE_S:
                    state.stream_lost_at = None
                    state.needs_register, state.next_attempt = True, 0.0
                    log.info("no ListAndWatch stream for %s; registering again", name)
                due = state.needs_register and now >= state.next_attempt
            if due:
                self._register(name, state)

    def _sleep_time(self, now: float) -> float:
        waits = [self._poll_interval_s]
        with self._lock:
            for state in self._states.values():
                if not state.server.serving:
                    waits.append(state.serve_retry_at - now)
                if state.needs_register:
                    waits.append(state.next_attempt - now)
                if state.stream_lost_at is not None:
                    waits.append(state.stream_lost_at + STREAM_GRACE_S - now)
        return max(0.0, min(waits))

    def _register(self, name: str, state: _ResourceState) -> None:
        started = time.monotonic()
        error = register_with_kubelet(self.kubelet_socket, state.server.socket_path.name, name, self._stop)
        with self._lock:
            if error is None:
                state.needs_register, state.failures, state.backoff_s = False, 0, BACKOFF_FIRST_S
                state.registered_at, state.last_error = time.monotonic(), ""
                if state.stream_lost_at is not None and state.stream_lost_at < started:
                    state.stream_lost_at = None  # lost before this Register: it opened a new stream
            else:
                state.failures += 1
                state.next_attempt = time.monotonic() + state.backoff_s
                state.last_error = error
                retry_in, state.backoff_s = state.backoff_s, min(state.backoff_s * 2, BACKOFF_MAX_S)
        if error is None:
            self._metrics.registrations.labels(name, "ok").inc()
            log.info("registered %s with the kubelet (endpoint %s, %.0f ms)", name, state.server.socket_path.name,
                     (time.monotonic() - started) * 1000)
        else:
            self._metrics.registrations.labels(name, "failed").inc()
            self._metrics.errors.labels(name, "register").inc()
            log.warning("registering %s failed (attempt %d): %s; retrying in %.1f s", name, state.failures, error, retry_in)


def register_with_kubelet(kubelet_socket: Path, endpoint: str, resource: str,
                          stop: threading.Event | None = None) -> str | None:
    """One Register call. Returns None on success, else a one-line reason.

    A kubelet that accepts the connection and never answers would hold us for
    REGISTER_TIMEOUT_S; ``stop`` cancels the call at once so SIGTERM is never late.
    """
    if not _is_socket(kubelet_socket):
        return f"no kubelet socket at {kubelet_socket}"
    # Old kubelets choke on a socket path as :authority; say "localhost".
    with grpc.insecure_channel(f"unix://{kubelet_socket}", options=[("grpc.default_authority", "localhost")]) as channel:
        stub = api_grpc.RegistrationStub(channel)
        request = api.RegisterRequest(
            version=API_VERSION, endpoint=endpoint, resource_name=resource, options=plugin_options())
        call = stub.Register.future(request, timeout=REGISTER_TIMEOUT_S, wait_for_ready=False)
        answered = threading.Event()
        call.add_done_callback(lambda _call: answered.set())
        while not answered.wait(0.1):
            if stop is not None and stop.is_set():
                call.cancel()
                return "cancelled: stopping"
        try:
            call.result()
        except grpc.RpcError as err:
            return f"kubelet answered {err.code().name}: {err.details()}"
    return None


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
