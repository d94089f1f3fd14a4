"""Keep every resource served and registered with the kubelet, whatever the kubelet does.

- Serve first, then Register (the kubelet dials back during Register).
- Kubelet restart: it deletes every socket in the plugin dir and serves a new
  kubelet.sock. inotify on the plugin dir sees our socket go (serve again) and
  kubelet.sock appear (register again at once).
- The kubelet ended ListAndWatch and no new stream came: register again. When the
  stream that ended belongs to our latest Register (opened after it started), the
  kubelet has dropped that registration: register again at once. That is what a
  surge update does on a real kubelet (1.36, pkg/kubelet/cm/devicemanager/plugin/
  v1beta1/handler.go runClient): when the old instance's stream ends, the kubelet
  looks the client up by resource name, finds the new instance's and disconnects
  it. Any other stream end (one opened before our latest Register: older kubelets
  stop the previous endpoint when a plugin registers again) waits STREAM_GRACE_S
  for a new stream first, so a re-registration can never loop.
- No kubelet yet, or Register failed: retry with capped exponential backoff;
  a line for the first failure and each new reason, an unchanged one at most
  once a minute. Never exit because the kubelet is away.
- The kubelet refused the registration itself (a resource name or API version
  it will never accept): one line, and the process ends with an error.
- The plugin dir removed (before or after the first registration): wait for it
  (inotify on its nearest ancestor, and a retry backoff of 1 s doubling to 5 s),
  then serve and register again.
- Our socket replaced by another process's (the next instance of a DaemonSet
  update starting before this one ends): stand aside, neither serve over it nor
  register, and never remove it on exit.
A slow poll re-checks the sockets in case an inotify event was missed.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvminfo.common.backoff import backoff_delay_s
from kvminfo.common.errors import KvminfoError
from kvminfo_plugin.devices.dirwatch import Change, DirectoryWatcher, DirEvent
from kvminfo_plugin.kubelet.server import SocketServer, plugin_options
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc
from kvminfo_plugin.telemetry.logs import FailureLog, errno_text
from kvminfo_plugin.telemetry.metrics import PluginMetrics

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
REGISTER_TIMEOUT_S = 10.0  # the kubelet dials us back within Register (its own dial timeout is 10 s)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# Serving fails when the plugin dir is gone; its reappearance is an inotify event,
# so retrying blindly can be slow: it is only the fallback.
SERVE_BACKOFF_FIRST_S = 1.0
# After the kubelet ends a stream older than our latest Register, how long a new
# one may take before we register again. On older kubelets a re-registration
# itself drops the previous stream, so re-registering at once on every end would
# loop. The stream of the latest Register ending needs no grace (see above).
STREAM_GRACE_S = 0.25


class _ResourceState:
    """One resource's place in the serve/register loop (guarded by the Supervisor's lock)."""

    def __init__(self, server: SocketServer) -> None:
        self.server = server
        self.needs_register = True
        self.next_attempt = 0.0
        self.register_failures = 0  # since the last success or reset: the backoff's retry number
        self.stream_lost_at: float | None = None
        self.stream_grace_s = STREAM_GRACE_S  # how long to await a new stream after that loss
        self.register_started_at: float | None = None  # the latest Register attempt
        self.registered_at: float | None = None
        self.last_error = "not registered yet"
        self.serve_retry_at = 0.0
        self.serve_failures = 0
        self.superseded = False  # another process's socket sits at our path
        self.register_log = FailureLog()
        self.serve_log = FailureLog()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a Register did not succeed. ``permanent``: the kubelet refused the request
    itself and will refuse it every time (retrying cannot help)."""

    reason: str
    permanent: bool = False


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
                    state.serve_retry_at, state.serve_failures = 0.0, 0
            elif event.name == KUBELET_SOCKET and event.change is Change.APPEARED:
                log.info("kubelet.sock appeared in %s; registering", self.plugin_dir)
                for state in self._states.values():
                    state.needs_register, state.next_attempt, state.register_failures = True, 0.0, 0
            elif event.name in self._socket_names and event.change is Change.VANISHED:
                pass  # the loop checks whether it is really gone: our own serve() deletes it too
            else:
                return
        self._wake.set()

    def on_stream_closed(self, resource: str, opened_at: float) -> None:
        """The last ListAndWatch stream of ``resource`` (opened at ``opened_at``,
        time.monotonic()) ended while we keep running."""
        dropped = False
        with self._lock:
            state = self._states.get(resource)
            # Also while a Register is in flight: the stream it opens may end before
            # _register() sees its answer, and that loss must not be forgotten.
            if state is not None:
                now = time.monotonic()
                # The kubelet opens the stream during (or right after) Register: a stream opened
                # after the latest Register started is that registration's own.
                dropped = state.register_started_at is not None and opened_at >= state.register_started_at
                state.stream_lost_at, state.stream_grace_s = now, 0.0 if dropped else STREAM_GRACE_S
        log.info("kubelet ended the ListAndWatch stream of %s%s", resource,
                 " of its latest registration: it dropped that registration (another instance's stream ended?)"
                 if dropped else "")
        self._wake.set()

    # ---- status for /healthz ------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        with self._lock:
            bad = [f"{name}: {'its socket belongs to another process now' if st.superseded else st.last_error}"
                   for name, st in self._states.items() if st.needs_register or not st.server.serving or st.superseded]
        return (not bad, "; ".join(bad) if bad else "ok: every resource served and registered")

    # ---- the loop -----------------------------------------------------------------------

    def run(self, on_poll: Callable[[], None] | None = None) -> None:
        """``on_poll`` is called every poll interval, in this thread (the health re-check rides on the
        sockets' slow poll: one wake-up per interval for both)."""
        self._watcher.start()
        next_poll = time.monotonic() + self._poll_interval_s
        try:
            while True:
                # Clear, then look: stop() sets _stop before _wake, so a stop that lands
                # between the two is seen here or wakes the wait below, never lost for a
                # whole poll (checking first and clearing after could drop its wake-up).
                self._wake.clear()
                if self._stop.is_set():
                    return
                self._step(time.monotonic())
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self._poll_interval_s
                    if on_poll is not None:
                        self._call(on_poll)
                self._wake.wait(self._sleep_time(time.monotonic(), next_poll))
        finally:
            self._watcher.stop()

    @staticmethod
    def _call(hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:  # a bug in a hook must not end serving and registering
            log.exception("the slow poll's %s failed", getattr(hook, "__qualname__", hook))

    def _step(self, now: float) -> None:
        for name, state in self._states.items():
            if self._stop.is_set():
                return
            server = state.server
            if server.serving and _is_socket(server.socket_path) and not server.owns_socket():
                if not state.superseded:
                    state.superseded = True
                    log.warning("%s now belongs to another process (a newer instance?); %s stands aside: "
                                "not registering, and leaving that socket in place", server.socket_path, name)
                continue
            if not server.serving or not _is_socket(server.socket_path):
                with self._lock:
                    if now < state.serve_retry_at:
                        continue
                if server.serving and not state.superseded and state.serve_log.failures == 0:
                    log.info("socket %s was removed (kubelet restart?); serving again", server.socket_path)
                try:
                    server.serve()
                except KvminfoError as err:
                    if state.registered_at is None and self.plugin_dir.is_dir():
                        raise  # the directory is there and still refuses us: an operator error, one line
                    with self._lock:  # e.g. the plugin dir was removed: its return wakes us
                        state.serve_failures += 1
                        retry_in = backoff_delay_s(state.serve_failures, SERVE_BACKOFF_FIRST_S, BACKOFF_MAX_S)
                        state.serve_retry_at = now + retry_in
                        state.stream_lost_at = None  # serving again registers anyway
                    suffix = state.serve_log.failed(str(err), now)
                    if suffix is not None:
                        log.warning("%s; retrying in %.1f s or when the directory is back%s", err, retry_in, suffix)
                    continue
                state.superseded = False
                state.serve_log.succeeded()
                log.info("serving %s on %s", name, server.socket_path)
                with self._lock:
                    state.needs_register, state.next_attempt, state.register_failures = True, 0.0, 0
                    state.serve_retry_at, state.serve_failures = 0.0, 0
            with self._lock:
                lost = state.stream_lost_at
                if lost is not None and server.service.open_streams > 0:
                    state.stream_lost_at = lost = None  # a new stream came: nothing to do
                if lost is not None and now - lost >= state.stream_grace_s:
                    state.stream_lost_at = None
                    state.needs_register, state.next_attempt = True, 0.0
                    log.info("no ListAndWatch stream for %s; registering again", name)
                due = state.needs_register and now >= state.next_attempt
            if due:
                self._register(name, state)

    def _sleep_time(self, now: float, next_poll: float) -> float:
        waits = [next_poll - now]
        with self._lock:
            for state in self._states.values():
                if not state.server.serving:
                    waits.append(state.serve_retry_at - now)
                if state.needs_register:
                    waits.append(state.next_attempt - now)
                if state.stream_lost_at is not None:
                    waits.append(state.stream_lost_at + state.stream_grace_s - now)
        return max(0.0, min(waits))

    def _register(self, name: str, state: _ResourceState) -> None:
        started = time.monotonic()
        with self._lock:
            state.register_started_at = started
        refusal = register_with_kubelet(self.kubelet_socket, state.server.socket_path.name, name, self._stop)
        if refusal is not None and refusal.reason == CANCELLED:
            return
        with self._lock:
            if refusal is None:
                state.needs_register, state.register_failures = False, 0
                state.registered_at, state.last_error = time.monotonic(), ""
                if state.stream_lost_at is not None and state.stream_lost_at < started:
                    state.stream_lost_at = None  # lost before this Register: it opened a new stream
            else:
                state.register_failures += 1
                retry_in = backoff_delay_s(state.register_failures, BACKOFF_FIRST_S, BACKOFF_MAX_S)
                state.next_attempt = time.monotonic() + retry_in
                state.last_error = refusal.reason
        if refusal is None:
            self._metrics.registrations.labels(name, "ok").inc()
            failures = state.register_log.succeeded()
            log.info("registered %s with the kubelet (endpoint %s, %.0f ms%s)", name, state.server.socket_path.name,
                     (time.monotonic() - started) * 1000, f", after {failures} failed attempts" if failures else "")
            return
        self._metrics.registrations.labels(name, "failed").inc()
        self._metrics.errors.labels(name, "register").inc()
        if refusal.permanent:
            raise KvminfoError(f"the kubelet refused to register {name} and will refuse it every time: {refusal.reason}")
        suffix = state.register_log.failed(refusal.reason, time.monotonic())
        if suffix is not None:
            log.warning("registering %s failed: %s; retrying in %.1f s, then with backoff up to %.0f s%s",
                        name, refusal.reason, retry_in, BACKOFF_MAX_S, suffix)


CANCELLED = "cancelled: stopping"


def register_with_kubelet(kubelet_socket: Path, endpoint: str, resource: str,
                          stop: threading.Event | None = None) -> Refusal | None:
    """One Register call. Returns None on success, else why not (one line).

    A kubelet that accepts the connection and never answers would hold us for
    REGISTER_TIMEOUT_S; ``stop`` cancels the call at once so SIGTERM is never late.
    """
    if not _is_socket(kubelet_socket):
        return Refusal(f"no kubelet socket at {kubelet_socket} (the kubelet is not running, or --plugin-dir is not its directory)")
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
                return Refusal(CANCELLED)
        try:
            call.result()
        except grpc.RpcError as err:
            return _refusal(kubelet_socket, err.code(), err.details() or "")
    return None


def _refusal(kubelet_socket: Path, code: grpc.StatusCode, details: str) -> Refusal:
    if code == grpc.StatusCode.UNAVAILABLE:
        # gRPC's text ("failed to connect to all addresses; ...") hides the one fact that
        # matters: did anything answer? Ask the socket directly.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(kubelet_socket))
        except OSError as err:
            if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return Refusal(f"nothing listens on {kubelet_socket} ({errno_text(err)}): the kubelet is not running")
            return Refusal(f"cannot connect to {kubelet_socket}: {errno_text(err)}")
        finally:
            probe.close()
        return Refusal(f"{kubelet_socket} accepts connections but Register failed: {' '.join(details.split())}")
    return Refusal(f"the kubelet answered {code.name}: {' '.join(details.split())}", permanent=_never_accepted(details))


def _never_accepted(details: str) -> bool:
    """Whether the kubelet refused the request itself. Its Register handler
    (pkg/kubelet/cm/devicemanager/plugin/v1beta1/server.go) checks the API version
    (errUnsupportedVersion: "... is not supported by kubelet ...") and the resource
    name (errInvalidResourceName: "the ResourceName ... is invalid") before dialling
    the plugin; either answer repeats for as long as the request is the same."""
    text = details.lower()
    return ("resourcename" in text and "invalid" in text) or ("version" in text and "not supported" in text)


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
