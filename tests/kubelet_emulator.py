"""A stand-in for the kubelet's device manager, speaking the real v1beta1 wire.

It serves Registration on kubelet.sock in a plugin dir and drives a plugin in
the device manager's order: Register received -> validate (version, extended
resource name, endpoint relative and present) -> dial the plugin's socket ->
GetDevicePluginOptions -> answer Register -> ListAndWatch in the background.
Admission then does GetPreferredAllocation (if offered) -> Allocate ->
PreStartContainer (if required). ``restart()`` does what a kubelet restart
does to the directory: delete every socket, serve a new kubelet.sock.

Clients are kept by resource name, as Kubernetes 1.36's device manager keeps
them (pkg/kubelet/cm/devicemanager/plugin/v1beta1/handler.go, read in the
v1.36.2 copy vendored by openshift/microshift at 8e16b12): ``connectClient``
puts the new client in ``s.clients[name]`` (``registerClient``) and leaves the
previous one's connection and stream alone; when any client's ListAndWatch
ends, ``runClient`` calls ``s.getClient(name)`` -- whichever client holds the
name *now* -- and ``disconnectClient``s it: removed from the map, its gRPC
connection closed (client.go ``Disconnect``), its devices marked Unhealthy
(manager.go ``PluginDisconnected``). So when the old instance of a surge update
exits, the kubelet drops the new instance.

Its checks are written from the kubelet's rules, not imported from the plugin,
so a plugin bug cannot hide behind a shared helper.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc

# apimachinery IsQualifiedName: [prefix/]name, prefix a DNS-1123 subdomain (<= 253), name <= 63.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _is_extended_resource_name(name: str) -> bool:
    """k8s.io/kubernetes pkg/apis/core/v1/helper IsExtendedResourceName (FACTS.md K6)."""
    if "/" not in name or "kubernetes.io/" in name or name.startswith("requests."):
        return False  # native (no domain, or kubernetes.io/ anywhere), or a quota name
    parts = ("requests." + name).split("/")
    if len(parts) != 2:
        return False
    prefix, short = parts
    return (len(prefix) <= 253 and bool(_SUBDOMAIN.fullmatch(prefix))
            and len(short) <= 63 and bool(_NAME.fullmatch(short)))


def kubelet_refusal(request: api.RegisterRequest, plugin_dir: Path, supported_version: str = "v1beta1") -> str | None:
    """Why the kubelet would refuse this Register, or None. The first two texts are the
    kubelet's own (devicemanager errUnsupportedVersion, errInvalidResourceName)."""
    if request.version != supported_version:
        return f'requested API version "{request.version}" is not supported by kubelet. Supported version is "{supported_version}"'
    name = request.resource_name
    if not _is_extended_resource_name(name):
        return f'the ResourceName "{name}" is invalid'
    if not request.endpoint or "/" in request.endpoint:
        return f"endpoint {request.endpoint!r} must be a file name relative to the plugin dir"
    try:
        if not stat.S_ISSOCK(os.stat(plugin_dir / request.endpoint).st_mode):
            return f"endpoint {request.endpoint!r} is not a socket"
    except FileNotFoundError:
        return f"endpoint {request.endpoint!r} does not exist in {plugin_dir}"
    return None


@dataclass
class Endpoint:
    """The kubelet's view of one registered plugin."""

    resource: str
    socket: Path
    options: api.DevicePluginOptions
    channel: grpc.Channel
    stub: api_grpc.DevicePluginStub
    registered_at: float
    updates: list[tuple[float, dict[str, str]]] = field(default_factory=list)  # (time, ID -> health)
    stream: grpc.Future | None = None
    stream_ended: bool = False
    deregistered_at: float | None = None  # when runClient's lookup by name disconnected this endpoint


class KubeletEmulator:
    def __init__(self, plugin_dir: Path) -> None:
        self.plugin_dir = plugin_dir
        self.socket = plugin_dir / "kubelet.sock"
        self._cond = threading.Condition()
        self.endpoints: dict[str, Endpoint] = {}
        self.registrations: list[tuple[float, api.RegisterRequest]] = []
        self.deregistrations: list[Endpoint] = []  # in order; deregistered_at set
        self.refusals: list[str] = []
        self.register_calls = 0  # every Register received, answered or not
        self.supported_version = "v1beta1"  # the API version this kubelet accepts
        self._server: grpc.Server | None = None
        # Clear it to make Register hang, like a wedged kubelet; set it to let calls through.
        self.answering = threading.Event()
        self.answering.set()

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> KubeletEmulator:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        api_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None
        with self._cond:
            endpoints, self.endpoints = list(self.endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.channel.close()
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass

    def restart(self) -> None:
        """What a kubelet restart does: stop, delete every socket in the dir, serve kubelet.sock anew."""
        self.stop()
        for entry in self.plugin_dir.iterdir():
            if stat.S_ISSOCK(entry.lstat().st_mode):
                entry.unlink()
        self.start()

    def end_stream(self, resource: str) -> None:
        """End the ListAndWatch stream from the kubelet's side without touching any socket
        (as a failed Recv does); returns once runClient's clean-up has run."""
        with self._cond:
            endpoint = self.endpoints[resource]
        endpoint.channel.close()
        self.wait_for(lambda: endpoint.deregistered_at is not None, what=f"the end of {resource}'s stream")

    # ---- Register handling (called from the gRPC thread) -----------------------------

    def _register(self, request: api.RegisterRequest, context: grpc.ServicerContext) -> api.Empty:
        with self._cond:
            self.register_calls += 1
            self._cond.notify_all()
        while not self.answering.wait(0.05):
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "caller went away")
        refusal = kubelet_refusal(request, self.plugin_dir, self.supported_version)
        if refusal is not None:
            with self._cond:
                self.refusals.append(refusal)
                self._cond.notify_all()
            context.abort(grpc.StatusCode.UNKNOWN, refusal)  # grpc-go's code for a plain Go error
        socket = self.plugin_dir / request.endpoint
        # A connection of its own, as each grpc-go ClientConn of the kubelet has (grpcio would
        # otherwise share one with an earlier channel to the same path: the global subchannel pool).
        channel = grpc.insecure_channel(f"unix://{socket}", options=[("grpc.use_local_subchannel_pool", 1)])
        stub = api_grpc.DevicePluginStub(channel)
        try:
            options = stub.GetDevicePluginOptions(api.Empty(), timeout=10)
        except grpc.RpcError as err:
            channel.close()
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to dial device plugin: {socket}: {err.details()}")
        endpoint = Endpoint(resource=request.resource_name, socket=socket, options=options, channel=channel,
                            stub=stub, registered_at=time.monotonic())
        with self._cond:
            # registerClient: s.clients[name] = c. The previous client, if any, keeps its stream.
            self.endpoints[request.resource_name] = endpoint
            self.registrations.append((endpoint.registered_at, request))
            self._cond.notify_all()
        threading.Thread(target=self._watch, args=(endpoint,), daemon=True).start()
        return api.Empty()

    def _watch(self, endpoint: Endpoint) -> None:
        try:
            for response in endpoint.stub.ListAndWatch(api.Empty()):
                with self._cond:
                    endpoint.updates.append((time.monotonic(), {d.ID: d.health for d in response.devices}))
                    self._cond.notify_all()
        except (grpc.RpcError, ValueError):
            pass  # cancelled by us, or the plugin went away
        with self._cond:
            endpoint.stream_ended = True
            # runClient after c.Run returns: c = s.getClient(name); if nil return; disconnectClient(name, c)
            # -- the client registered under the name now, not necessarily the one whose stream ended.
            current = self.endpoints.pop(endpoint.resource, None)
            if current is not None:
                current.deregistered_at = time.monotonic()
                self.deregistrations.append(current)
            self._cond.notify_all()
        if current is not None:
            current.channel.close()

    # ---- waiting ----------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition") -> object:
        with self._cond:
            result = self._cond.wait_for(predicate, timeout_s)
        if not result:
            raise AssertionError(f"kubelet emulator: timed out after {timeout_s}s waiting for {what}")
        return result

    def wait_registered(self, resource: str, count: int = 1, timeout_s: float = 5.0) -> Endpoint:
        def ready() -> Endpoint | None:
            done = [r for _, r in self.registrations if r.resource_name == resource]
            endpoint = self.endpoints.get(resource)
            return endpoint if len(done) >= count and endpoint is not None and endpoint.updates else None

        return self.wait_for(ready, timeout_s, f"registration #{count} of {resource} with a device list")  # type: ignore[return-value]

    def latest(self, resource: str) -> dict[str, str]:
        with self._cond:
            return dict(self.endpoints[resource].updates[-1][1])

    def wait_health(self, resource: str, predicate: Callable[[dict[str, str]], bool], timeout_s: float = 5.0) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            endpoint = self.endpoints.get(resource)
            if endpoint is None or not endpoint.updates:
                return None
            latest = endpoint.updates[-1][1]
            return latest if predicate(latest) else None

        return self.wait_for(check, timeout_s, f"a device list of {resource} that matches")  # type: ignore[return-value]

    # ---- admission, in the device manager's order -------------------------------------

    def stub(self, resource: str) -> api_grpc.DevicePluginStub:
        with self._cond:
            return self.endpoints[resource].stub

    def admit(self, resource: str, count: int) -> api.ContainerAllocateResponse:
        """Pick ``count`` healthy devices the way the kubelet does and allocate them to one container."""
        with self._cond:
            endpoint = self.endpoints[resource]
            healthy = sorted(i for i, h in endpoint.updates[-1][1].items() if h == "Healthy")
        if len(healthy) < count:
            raise AssertionError(f"only {len(healthy)} healthy devices of {resource}, need {count}")
        chosen = healthy[:count]
        if endpoint.options.get_preferred_allocation_available:
            preferred = endpoint.stub.GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
                api.ContainerPreferredAllocationRequest(available_deviceIDs=healthy, allocation_size=count)]), timeout=5)
            chosen = list(preferred.container_responses[0].deviceIDs)
        response = endpoint.stub.Allocate(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=chosen)]), timeout=5)
        if endpoint.options.pre_start_required:
            endpoint.stub.PreStartContainer(api.PreStartContainerRequest(devices_ids=chosen), timeout=30)
        return response.container_responses[0]


class _Registration(api_grpc.RegistrationServicer):
    def __init__(self, kubelet: KubeletEmulator) -> None:
        self._kubelet = kubelet

    def Register(self, request: api.RegisterRequest, context: grpc.ServicerContext) -> api.Empty:
        return self._kubelet._register(request, context)
