"""The driver's gRPC services, on the kubelet's protos (api/, Kubernetes v1.36.2):

- pluginregistration ``Registration`` on the registry socket: GetInfo says what we are,
  NotifyRegistrationStatus tells us whether the kubelet took us;
- ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin`` on the DRA socket (NodePrepareResources,
  NodeUnprepareResources), one implementation for both;
- ``v1alpha1.DRAResourceHealth`` NodeWatchResources on the same socket: every device's
  health, again on every change.

Prepare is stateless: the answer is computed from the claim the API server holds
and the devices this node publishes, and our CDI spec (shared by every claim) stays
written. So a repeated call answers the same, after our restart or the kubelet's,
and Unprepare has nothing to undo.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
from kvminfo_dra.claims import Prepared
from kvminfo_dra.upstream import KvminfoError, one_line

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"  # pluginregistration/v1 DRAPlugin
# gRPC "<package>.<service>" names the kubelet knows (dra/v1 and v1beta1 DRAPluginService); the
# kubelet takes the FIRST of ours it knows (validateSupportedServices in
# pkg/kubelet/cm/dra/plugin/dra_plugin_manager.go), so the newest comes first.
SUPPORTED_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")

PrepareOne = Callable[[str, str, str], list[Prepared]]  # (namespace, name, uid) -> devices; raises KvminfoError


class DraService:
    """NodePrepareResources / NodeUnprepareResources for one proto package (v1 or v1beta1)."""

    def __init__(self, pb: Any, prepare_one: PrepareOne, unprepare_one: Callable[[str, str, str], None]) -> None:
        self._pb, self._prepare_one, self._unprepare_one = pb, prepare_one, unprepare_one
        self._share_ids = "share_id" in pb.Device.DESCRIPTOR.fields_by_name

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC name)
        answer = self._pb.NodePrepareResourcesResponse()
        for claim in request.claims:
            one = answer.claims[claim.uid]
            try:
                prepared = self._prepare_one(claim.namespace, claim.name, claim.uid)
            except KvminfoError as err:
                one.error = str(err)
                log.warning("NodePrepareResources %s/%s: %s", claim.namespace, claim.name, err)
                continue
            for p in prepared:
                device = one.devices.add(request_names=p.request_names, pool_name=p.pool_name,
                                         device_name=p.device_name, cdi_device_ids=p.cdi_device_ids)
                if p.share_id is not None and self._share_ids:
                    device.share_id = p.share_id
        return answer

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        answer = self._pb.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            one = answer.claims[claim.uid]
            try:
                self._unprepare_one(claim.namespace, claim.name, claim.uid)
            except KvminfoError as err:
                one.error = str(err)
        return answer


@dataclass(frozen=True)
class Health:
    healthy: bool | None  # None: unknown
    message: str = ""
    since: int = 0  # unix seconds of the last change


class HealthBoard:
    """Each device's health; NodeWatchResources streams it whole on every change."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._health: dict[str, Health] = {}
        self._changed = threading.Condition()
        self._version = 0
        self._closed = False

    def set_all(self, health: Mapping[str, tuple[bool | None, str]]) -> None:
        with self._changed:
            now = int(time.time())
            new = {name: self._health[name] if name in self._health and (self._health[name].healthy, self._health[name].message) == h
                   else Health(h[0], h[1], now) for name, h in health.items()}
            if new != self._health:
                self._health = new
                self._version += 1
                self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def snapshot(self) -> dict[str, Health]:
        with self._changed:
            return dict(self._health)

    def watch(self, active: Callable[[], bool]) -> Iterator[dict[str, Health]]:
        seen = -1
        while True:
            with self._changed:
                while self._version == seen and not self._closed and active():
                    self._changed.wait(1.0)
                if self._closed or not active():
                    return
                seen = self._version
                current = dict(self._health)
            yield current


class HealthService(health_grpc.DRAResourceHealthServicer):
    def __init__(self, board: HealthBoard) -> None:
        self._board = board

    def NodeWatchResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        for health in self._board.watch(context.is_active):
            yield health_pb.NodeWatchResourcesResponse(devices=[
                health_pb.DeviceHealth(
                    device=health_pb.DeviceIdentifier(pool_name=self._board.pool, device_name=name),
                    health=(health_pb.UNKNOWN if h.healthy is None else health_pb.HEALTHY if h.healthy
                            else health_pb.UNHEALTHY),
                    last_updated_time=h.since, message=h.message)
                for name, h in sorted(health.items())])


class RegistrationService(reg_grpc.RegistrationServicer):
    """What the kubelet's plugin watcher asks on the registry socket."""

    def __init__(self, driver: str, endpoint: str, on_status: Callable[[bool, str], None]) -> None:
        self._info = reg_pb.PluginInfo(type=PLUGIN_TYPE, name=driver, endpoint=endpoint,
                                       supported_versions=list(SUPPORTED_SERVICES))
        self._on_status = on_status

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._info

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._on_status(request.plugin_registered, one_line(request.error) if request.error else "")
        return reg_pb.RegistrationStatusResponse()


def dra_server(prepare_one: PrepareOne, unprepare_one: Callable[[str, str, str], None], board: HealthBoard) -> grpc.Server:
    """The DRA socket's server (not yet bound): both DRAPlugin versions and the health stream.
    Health streams hold a thread each (one per kubelet), so the pool has room for them."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dra-grpc"))
    v1_grpc.add_DRAPluginServicer_to_server(DraService(v1_pb, prepare_one, unprepare_one), server)
    v1beta1_grpc.add_DRAPluginServicer_to_server(DraService(v1beta1_pb, prepare_one, unprepare_one), server)
    health_grpc.add_DRAResourceHealthServicer_to_server(HealthService(board), server)
    return server


def registration_server(service: RegistrationService) -> grpc.Server:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dra-registration"))
    reg_grpc.add_RegistrationServicer_to_server(service, server)
    return server
