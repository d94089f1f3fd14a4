"""A stand-in for the kubelet's DRA side, driving a driver over the real protos.

What it does, from the kubelet v1.36.2 sources (../shared/corpus/dra/FACTS.md sections 1-2):
- plugin watcher (pkg/kubelet/pluginmanager/pluginwatcher): a socket appearing in
  ``<root>/plugins_registry/`` (names starting with '.' ignored) is registered by
  operationexecutor/operation_generator.go: dialled, asked ``GetInfo`` (1 s), the handler
  chosen by ``type`` ("DRAPlugin"; another type has none), an empty endpoint taken as the
  socket itself, ValidatePlugin, RegisterPlugin, then NotifyRegistrationStatus with its
  messages ("RegisterPlugin error -- ..."); a failed GetInfo is tried again by the
  reconciler with exponential backoff from 500 ms (nestedpendingoperations);
- DRAPluginManager.ValidatePlugin/RegisterPlugin (pkg/kubelet/cm/dra/plugin/
  dra_plugin_manager.go): validateSupportedServices takes the FIRST of the plugin's
  supported services that the kubelet knows (v1.DRAPlugin, v1beta1.DRAPlugin), an
  empty list or none in common is an error; an endpoint already registered for the
  driver is refused ("One plugin instance cannot hijack the endpoint of another");
  the endpoint is dialled as ``unix:<endpoint>``; then NotifyRegistrationStatus;
- several plugins per driver, the most recently registered connected one is called
  (``get``); a registration socket removed deregisters that plugin;
- the health stream: NodeWatchResources on the DRA endpoint, collected here;
- prepare/unprepare through the chosen service (45 s call timeout,
  defaultClientCallTimeout); the kubelet's manager.go refuses an answer that
  leaves a claim out.
- ResourceSlice wiping (DRAPluginManager.sync, NewDRAPluginManager): at kubelet start
  the node's slices are deleted; when a driver's last plugin goes, its slices are
  deleted after ``wiping_delay_s`` (defaultWipingDelay, 30 s) unless a plugin of it
  registers first. ``wipe(driver or "")`` is the DeleteCollection the test provides.
``restart()`` drops every plugin, wipes, and rescans the directory, as a kubelet restart does.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kvminfo_dra.api.dra_health_v1alpha1 import api_pb2 as health_pb
from kvminfo_dra.api.dra_health_v1alpha1 import api_pb2_grpc as health_grpc
from kvminfo_dra.api.dra_v1 import api_pb2 as v1_pb
from kvminfo_dra.api.dra_v1 import api_pb2_grpc as v1_grpc
from kvminfo_dra.api.dra_v1beta1 import api_pb2 as v1beta1_pb
from kvminfo_dra.api.dra_v1beta1 import api_pb2_grpc as v1beta1_grpc
from kvminfo_dra.api.pluginregistration_v1 import api_pb2 as reg_pb
from kvminfo_dra.api.pluginregistration_v1 import api_pb2_grpc as reg_grpc

KUBELET_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # servicesSupportedByKubelet, newest first
CALL_TIMEOUT_S = 45.0
_STUBS = {"v1.DRAPlugin": (v1_pb, v1_grpc), "v1beta1.DRAPlugin": (v1beta1_pb, v1beta1_grpc)}


def choose_service(supported: list[str], kubelet: tuple[str, ...] = KUBELET_SERVICES) -> tuple[str, str]:
    """(chosen service, error): validateSupportedServices."""
    if not supported:
        return "", "empty list of supported gRPC services (aka supported versions)"
    chosen = next((s for s in supported if s in kubelet), "")
    if not chosen:
        return "", f"none of services supported by the plugin ({supported}) are supported by the kubelet ({list(kubelet)})"
    return chosen, ""


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:  # removed between listdir and lstat
        return False


@dataclass
class Plugin:
    driver: str
    endpoint: str
    service: str
    registration_socket: str
    channel: grpc.Channel  # for prepare/unprepare, from the test's thread
    health: list[Any] = field(default_factory=list)
    removed: threading.Event = field(default_factory=threading.Event)
    stream: Any = None  # the health stream in flight (cancelled on removal)

    def drop(self) -> None:
        """Deregistered: end the health stream (its thread closes its own channel) and ours.
        grpc-python must not have a channel closed under a thread that uses it (it crashes)."""
        self.removed.set()
        if self.stream is not None:
            self.stream.cancel()
        self.channel.close()


class DraKubelet:
    def __init__(self, root: Path, services: tuple[str, ...] = KUBELET_SERVICES,
                 wipe: Callable[[str], None] = lambda _driver: None, wiping_delay_s: float = 30.0) -> None:
        self.root = root
        self._wipe = wipe
        self.wiping_delay_s = wiping_delay_s
        self._pending_wipes: dict[str, threading.Timer] = {}
        self.registry = root / "plugins_registry"
        self.registry.mkdir(parents=True, exist_ok=True)
        self.services = services
        self.plugins: list[Plugin] = []  # in registration order
        self.refused: list[tuple[str, str]] = []  # (socket, error)
        self._seen: set[str] = set()
        self._retry: dict[str, tuple[float, float]] = {}  # socket -> (next attempt, backoff): failed registrations
        self._lock = threading.Lock()
        self._stop = threading.Event()
        wipe("")  # kubelet start: no driver is registered yet, none of their slices is usable
        self._thread = threading.Thread(target=self._watch, name="dra-kubelet", daemon=True)
        self._thread.start()

    def close(self) -> None:
        for timer in self._pending_wipes.values():
            timer.cancel()
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for plugin in self.plugins:
                plugin.drop()
            self.plugins.clear()

    def restart(self) -> None:
        """A kubelet restart: every plugin forgotten, the registry scanned anew."""
        with self._lock:
            for plugin in self.plugins:
                plugin.drop()
            self.plugins.clear()
            self._seen.clear()
            for timer in self._pending_wipes.values():
                timer.cancel()
            self._pending_wipes.clear()
        self._wipe("")

    # -- plugin watcher ---------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                names = {n for n in os.listdir(self.registry) if not n.startswith(".")}
            except FileNotFoundError:
                names = set()
            sockets = {str(self.registry / n) for n in names if _is_socket(self.registry / n)}
            with self._lock:
                for gone in self._seen - sockets:
                    self._seen.discard(gone)
                    for plugin in [p for p in self.plugins if p.registration_socket == gone]:
                        plugin.drop()
                        self.plugins.remove(plugin)
                        if not any(p.driver == plugin.driver for p in self.plugins):
                            self._schedule_wipe(plugin.driver)
                new = sockets - self._seen
                self._seen |= new
                now = time.monotonic()
                for gone in set(self._retry) - sockets:
                    del self._retry[gone]
                due = {s for s, (at, _) in self._retry.items() if at <= now}
            for socket in sorted(new | due):
                self._register(socket)
            self._stop.wait(0.05)

    def _schedule_wipe(self, driver: str) -> None:
        """Lock held. The driver's last plugin went: wipe its slices later, unless it comes back."""
        if driver in self._pending_wipes:
            return  # already queued: the first deadline stands
        timer = threading.Timer(self.wiping_delay_s, self._wipe_now, args=(driver,))
        timer.daemon = True
        self._pending_wipes[driver] = timer
        timer.start()

    def _wipe_now(self, driver: str) -> None:
        with self._lock:
            if self._pending_wipes.pop(driver, None) is None:
                return
        self._wipe(driver)

    def _register(self, socket: str) -> None:
        """GenerateRegisterPluginFunc (pkg/kubelet/pluginmanager/operationexecutor/operation_generator.go),
        step for step and message for message."""
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            registration = reg_grpc.RegistrationStub(channel)
            try:
                info = registration.GetInfo(reg_pb.InfoRequest(), timeout=1)  # context.WithTimeout(ctx, time.Second)
            except grpc.RpcError as err:
                self.refused.append((socket, f"RegisterPlugin error -- failed to get plugin info using RPC GetInfo at "
                                             f"socket {socket}, err: {err.code()}"))
                # The reconciler tries again (nestedpendingoperations: exponential backoff from 500 ms).
                with self._lock:
                    backoff = self._retry.get(socket, (0.0, 0.25))[1] * 2
                    self._retry[socket] = (time.monotonic() + backoff, backoff)
                return
            with self._lock:
                self._retry.pop(socket, None)
            endpoint = info.endpoint or socket
            error = ""
            if info.type != "DRAPlugin":
                error = f"RegisterPlugin error -- no handler registered for plugin type: {info.type} at socket {socket}"
            else:
                _, invalid = choose_service(list(info.supported_versions), self.services)  # ValidatePlugin
                if invalid:
                    error = ("RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC versions "
                             f"of DRA driver plugin {info.name} at endpoint {endpoint}: {invalid}")
                else:
                    service, _ = choose_service(list(info.supported_versions), self.services)
                    failed = self._add(info.name, endpoint, service, socket)  # RegisterPlugin
                    if failed:
                        error = f"RegisterPlugin error -- plugin registration failed with err: {failed}"
            if error:
                self.refused.append((socket, error))
            try:
                registration.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=not error,
                                                                                error=error), timeout=5)
            except grpc.RpcError:
                pass  # the plugin went meanwhile; its socket's removal deregisters it

    def _add(self, driver: str, endpoint: str, service: str, socket: str) -> str:
        with self._lock:
            if any(p.driver == driver and p.endpoint == endpoint for p in self.plugins):
                return f"endpoint {endpoint} already registered for DRA driver plugin {driver}"
            plugin = Plugin(driver, endpoint, service, socket, grpc.insecure_channel(f"unix:{endpoint}"))
            self.plugins.append(plugin)
            pending = self._pending_wipes.pop(driver, None)
            if pending is not None:  # usable again: cancel the wipe
                pending.cancel()
        threading.Thread(target=self._health, args=(plugin,), daemon=True).start()
        return ""

    def _health(self, plugin: Plugin) -> None:
        with grpc.insecure_channel(f"unix:{plugin.endpoint}") as channel:
            stub = health_grpc.DRAResourceHealthStub(channel)
            while not self._stop.is_set() and not plugin.removed.is_set():
                with self._lock:
                    if plugin.removed.is_set():
                        return
                    plugin.stream = stub.NodeWatchResources(health_pb.NodeWatchResourcesRequest())
                try:
                    for answer in plugin.stream:
                        plugin.health.append(answer)
                except grpc.RpcError:
                    pass
                plugin.removed.wait(0.2)  # the kubelet retries every 5 s; faster here

    # -- calls ---------------------------------------------------------------------------------------
    def plugin(self, driver: str) -> Plugin:
        """``get`` in dra_plugin_manager.go: the latest connected (here: the latest) plugin of ``driver``."""
        with self._lock:
            found = [p for p in self.plugins if p.driver == driver]
        if not found:
            raise LookupError(f"DRA driver {driver} is not registered")
        return found[-1]

    def wait_registered(self, driver: str, count: int = 1, timeout: float = 10) -> list[Plugin]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [p for p in self.plugins if p.driver == driver]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"{driver}: {count} plugin(s) not registered within {timeout} s (refused: {self.refused})")

    def prepare(self, driver: str, claims: list[tuple[str, str, str]], service: str | None = None) -> dict[str, Any]:
        """claims: (namespace, uid, name); returns uid -> NodePrepareResourceResponse."""
        return self._call(driver, claims, service, "Prepare")

    def unprepare(self, driver: str, claims: list[tuple[str, str, str]], service: str | None = None) -> dict[str, Any]:
        return self._call(driver, claims, service, "Unprepare")

    def _call(self, driver: str, claims: list[tuple[str, str, str]], service: str | None, verb: str) -> dict[str, Any]:
        plugin = self.plugin(driver)
        pb, grpc_module = _STUBS[service or plugin.service]
        request = getattr(pb, f"Node{verb}ResourcesRequest")(
            claims=[pb.Claim(namespace=n, uid=u, name=m) for n, u, m in claims])
        stub = grpc_module.DRAPluginStub(plugin.channel)
        answer = getattr(stub, f"Node{verb}Resources")(request, timeout=CALL_TIMEOUT_S)
        missing = {u for _, u, _ in claims} - set(answer.claims)
        if missing:  # manager.go: "NodePrepareResources left out %d claims"
            raise AssertionError(f"Node{verb}Resources left out {len(missing)} claims")
        return dict(answer.claims)
