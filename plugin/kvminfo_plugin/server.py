"""The DevicePlugin gRPC service for one resource, and its unix-socket server."""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterator

import grpc

from kvminfo.errors import KvminfoError
from kvminfo_plugin.cdi import qualified_name
from kvminfo_plugin.config import ResourceConfig
from kvminfo_plugin.inventory import Inventory
from kvminfo_plugin.metrics import PluginMetrics
from kvminfo_plugin.v1beta1 import api_pb2 as api
from kvminfo_plugin.v1beta1 import api_pb2_grpc as api_grpc

log = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
# Threads for the ListAndWatch stream(s) (one per kubelet, two briefly across a
# restart) plus concurrent Allocates; more calls queue in gRPC. Measured on 2 cores
# with 16 callers: 8 threads gave ~40% more Allocates/s and a lower p99 than 32,
# because fewer threads fight over the GIL (bench/bench_plugin.py).
MAX_WORKERS = 8

OnStreamClosed = Callable[[str, int], None]  # (resource, streams still open)


def plugin_options() -> api.DevicePluginOptions:
    """Sent in Register and returned by GetDevicePluginOptions; the two must agree."""
    return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


class ResourceService(api_grpc.DevicePluginServicer):
    """Serves one resource. Outlives its gRPC server: a kubelet restart
    replaces the server, the health state and counters stay."""

    def __init__(self, resource: ResourceConfig, metrics: PluginMetrics, on_stream_closed: OnStreamClosed) -> None:
        self.resource = resource
        self.inventory = Inventory.for_resource(resource)
        self._metrics = metrics
        self._on_stream_closed = on_stream_closed
        self._cond = threading.Condition()
        # Replaced, never mutated: Allocate reads it without the lock.
        self._healthy_paths: frozenset[str] = frozenset()
        self._version = 0
        self._listing = self._build_listing()
        self._stopping = False
        self.open_streams = 0
        self._order = {device_id: index for index, device_id in enumerate(self.inventory.ids)}
        self._cdi_names = {p: qualified_name(resource, p) for p in resource.devices} if resource.cdi else {}
        # Counter children looked up once: .labels() takes a lock and a dict lookup per call.
        self._allocations = metrics.allocations.labels(resource.name)
        self._container_responses: dict[tuple[str, ...], api.ContainerAllocateResponse] = {}

    def _container_response(self, paths: tuple[str, ...]) -> api.ContainerAllocateResponse:
        """The answer for one container given these nodes; built once per set of nodes,
        then copied in C (a resource has a handful of nodes, so few sets ever occur)."""
        cached = self._container_responses.get(paths)
        if cached is None:
            resource = self.resource
            if not paths:  # a container that asked for none of this resource gets nothing
                cached = api.ContainerAllocateResponse()
            elif self._cdi_names:
                # Only the names: the runtime injects node, mounts and env from the CDI spec;
                # envs/mounts sent here too would reach the container twice (CRI request + spec).
                cached = api.ContainerAllocateResponse(cdi_devices=[api.CDIDevice(name=self._cdi_names[p]) for p in paths])
            else:
                cached = api.ContainerAllocateResponse(
                    envs=dict(resource.envs),
                    mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                            for m in resource.mounts],
                    devices=[api.DeviceSpec(container_path=p, host_path=p, permissions=resource.permissions)
                             for p in paths])
            self._container_responses[paths] = cached
        return cached

    # ---- state fed by the health monitor ------------------------------------------------

    def set_path_health(self, path: str, healthy: bool) -> None:
        with self._cond:
            if (path in self._healthy_paths) == healthy:
                return
            self._healthy_paths = self._healthy_paths | {path} if healthy else self._healthy_paths - {path}
            self._version += 1
            self._listing = self._build_listing()
            self._cond.notify_all()

    def _build_listing(self) -> api.ListAndWatchResponse:
        healthy = unhealthy = 0
        devices = []
        for device_id, path in self.inventory.path_of.items():
            ok = path in self._healthy_paths
            healthy += ok
            unhealthy += not ok
            devices.append(api.Device(ID=device_id, health=HEALTHY if ok else UNHEALTHY))
        self._metrics.set_devices(self.resource.name, healthy, unhealthy)
        return api.ListAndWatchResponse(devices=devices)

    def shutdown(self) -> None:
        """End every ListAndWatch stream (the process is exiting)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # ---- DevicePlugin -------------------------------------------------------------------

    def GetDevicePluginOptions(self, request: api.Empty, context: grpc.ServicerContext) -> api.DevicePluginOptions:
        return plugin_options()

    def ListAndWatch(self, request: api.Empty, context: grpc.ServicerContext) -> Iterator[api.ListAndWatchResponse]:
        context.add_callback(self._wake)  # the kubelet went away: stop waiting
        with self._cond:
            self.open_streams += 1
        self._metrics.registered.labels(self.resource.name).set(1)
        sent = -1
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._version != sent or self._stopping or not context.is_active())
                    if self._stopping or not context.is_active():
                        return
                    sent, listing = self._version, self._listing
                yield listing
        finally:
            with self._cond:
                self.open_streams -= 1
                remaining, stopping = self.open_streams, self._stopping
            if remaining == 0:
                self._metrics.registered.labels(self.resource.name).set(0)
            if not stopping:
                self._on_stream_closed(self.resource.name, remaining)

    def GetPreferredAllocation(self, request: api.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> api.PreferredAllocationResponse:
        response = api.PreferredAllocationResponse()
        for container in request.container_requests:
            self._refuse_unknown(list(container.available_deviceIDs) + list(container.must_include_deviceIDs),
                                 "GetPreferredAllocation", context)
            response.container_responses.add(deviceIDs=self.preferred(
                list(container.available_deviceIDs), list(container.must_include_deviceIDs), container.allocation_size))
        return response

    def preferred(self, available: list[str], must_include: list[str], size: int) -> list[str]:
        """must_include first, then available ones in our advertising order, never more than ``size``.

        The kubelet's device manager (devicesToAllocate) passes as must_include the devices it
        already took for this container (reused from init containers) and as size the total it
        needs; it only asks when it still needs more, so must_include < size there. It keeps
        only the IDs it can use and fills any shortfall itself, so when a caller sends more
        must_include than size, the first ``size`` of them are the faithful answer."""
        picked = list(dict.fromkeys(must_include))[:max(size, 0)]
        chosen = set(picked)
        for device_id in sorted(set(available) - chosen, key=self._order.__getitem__):
            if len(picked) >= size:
                break
            picked.append(device_id)
        return picked

    def Allocate(self, request: api.AllocateRequest, context: grpc.ServicerContext) -> api.AllocateResponse:
        all_ids = [i for c in request.container_requests for i in c.devices_ids]
        self._refuse_unknown(all_ids, "Allocate", context)
        healthy_paths = self._healthy_paths
        bad = [p for p in self.inventory.paths_for(all_ids) if p not in healthy_paths]
        if bad:
            self._metrics.errors.labels(self.resource.name, "allocate_unhealthy").inc()
            message = f"{self.resource.name}: device {bad[0]} is unhealthy"
            log.warning("refused Allocate: %s", message)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        response = api.AllocateResponse()
        given = 0
        for container in request.container_requests:
            # One response per request, in order, even for a container that asked for nothing.
            paths = tuple(self.inventory.paths_for(list(container.devices_ids)))
            response.container_responses.add().CopyFrom(self._container_response(paths))
            if paths:
                given += 1
                log.info("allocated %s %s -> %s", self.resource.name, ",".join(container.devices_ids),
                         ",".join(self._cdi_names[p] for p in paths) if self._cdi_names else ",".join(paths))
        if given:
            self._allocations.inc(given)
        return response

    def PreStartContainer(self, request: api.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()  # not required: pre_start_required is false

    def _refuse_unknown(self, ids: list[str], call: str, context: grpc.ServicerContext) -> None:
        unknown = self.inventory.unknown(ids)
        if unknown:
            self._metrics.errors.labels(self.resource.name, "unknown_device").inc()
            message = f"{call}: unknown device ID {unknown[0]!r} for resource {self.resource.name}"
            log.warning("refused %s", message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class SocketServer:
    """A gRPC server for one ResourceService on ``<plugin dir>/<socket name>``, mode 0600."""

    def __init__(self, service: ResourceService, socket_path: Path) -> None:
        self.service = service
        self.socket_path = socket_path
        self._server: grpc.Server | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    def serve(self) -> None:
        self.stop()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="grpc"))
        api_grpc.add_DevicePluginServicer_to_server(self.service, server)
        # Only the kubelet (root) may talk to us, so the socket must never be connectable
        # by others, not even for a moment. A restrictive umask would do it, but the umask
        # is process-wide and other threads create files meanwhile; instead bind under a
        # hidden name nobody dials, make it 0600, then rename it into place (a listening
        # unix socket keeps working under its new name).
        binding = self._binding_path()
        _unlink(binding)  # left by a crash mid-serve; a stale socket_path is replaced below
        try:
            server.add_insecure_port(f"unix://{binding}")  # binds (and listens) now
            os.chmod(binding, 0o600)
            os.replace(binding, self.socket_path)
        except (RuntimeError, OSError) as err:  # RuntimeError: grpc's way of saying bind() failed
            server.stop(None)
            _unlink(binding)
            reason = err.strerror if isinstance(err, OSError) else err
            raise KvminfoError(f"{self.socket_path}: cannot serve the device plugin socket: {reason}") from None
        server.start()
        self._server = server

    def stop(self, grace_s: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace_s).wait()

    def _binding_path(self) -> Path:
        # kvminfo-x.sock -> .kvminfo-x.tmp: as long as the real name, so it fits in sun_path
        # whenever the real one does (the config checks that).
        return self.socket_path.with_name(f".{self.socket_path.stem}.tmp")

    def remove_socket(self) -> None:
        _unlink(self.socket_path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
