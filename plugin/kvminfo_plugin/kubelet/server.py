"""The DevicePlugin gRPC service for one resource, and its unix-socket server.
Only gRPC here: what to answer is decided by kvminfo_plugin.devices.pool."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc

from kvminfo.common.errors import KvminfoError
from kvminfo.common.fsutil import unlink_if_exists
from kvminfo_plugin.devices.pool import DevicePool, Refused
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc
from kvminfo_plugin.telemetry.logs import errno_text

log = logging.getLogger(__name__)

# Threads for the ListAndWatch stream(s) (one per kubelet, two briefly across a
# restart) plus concurrent Allocates; more calls queue in gRPC. Fewer threads fight
# less over the GIL: 8 gave more Allocates/s and a lower p99 than 32 (bench/bench_plugin.py).
MAX_WORKERS = 8

# (resource, streams still open, the process is stopping, time.monotonic() when the
# stream that opened or ended was opened)
OnStreamsChanged = Callable[[str, int, bool, float], None]


def plugin_options() -> api.DevicePluginOptions:
    """Sent in Register and returned by GetDevicePluginOptions; the two must agree."""
    return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


_STATUS = {"unknown_device": grpc.StatusCode.INVALID_ARGUMENT, "allocate_unhealthy": grpc.StatusCode.FAILED_PRECONDITION}


class ResourceService(api_grpc.DevicePluginServicer):
    """The DevicePlugin gRPC service of one resource: requests in, DevicePool
    decisions out. Outlives its gRPC server: a kubelet restart replaces the
    server, the pool's health state and counters stay."""

    def __init__(self, pool: DevicePool, on_streams_changed: OnStreamsChanged) -> None:
        self.pool = pool
        self.resource = pool.resource
        self._on_streams_changed = on_streams_changed
        self._lock = threading.Lock()
        self._stopping = False
        self.open_streams = 0

    def shutdown(self) -> None:
        """End every ListAndWatch stream (the process is exiting)."""
        with self._lock:
            self._stopping = True
        self.pool.close()

    def _streams(self, delta: int, opened_at: float) -> None:
        with self._lock:
            self.open_streams += delta
            remaining, stopping = self.open_streams, self._stopping
        self._on_streams_changed(self.resource.name, remaining, stopping, opened_at)

    def GetDevicePluginOptions(self, request: api.Empty, context: grpc.ServicerContext) -> api.DevicePluginOptions:
        return plugin_options()

    def ListAndWatch(self, request: api.Empty, context: grpc.ServicerContext) -> Iterator[api.ListAndWatchResponse]:
        context.add_callback(self.pool.wake)  # the kubelet went away: stop waiting
        opened_at = time.monotonic()
        self._streams(+1, opened_at)
        sent = -1
        try:
            while (listing := self.pool.next_listing(sent, context.is_active)) is not None:
                sent = listing.version
                yield listing.response
        finally:
            self._streams(-1, opened_at)

    def GetPreferredAllocation(self, request: api.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> api.PreferredAllocationResponse:
        response = api.PreferredAllocationResponse()
        for container in request.container_requests:
            try:
                # The repeated field itself, not a list of it: only the IDs reached become str.
                ids = self.pool.preferred(container.available_deviceIDs, container.must_include_deviceIDs,
                                          container.allocation_size)
            except Refused as err:
                context.abort(_STATUS[err.kind], str(err))
            response.container_responses.add(deviceIDs=ids)
        return response

    def Allocate(self, request: api.AllocateRequest, context: grpc.ServicerContext) -> api.AllocateResponse:
        try:
            answers = self.pool.allocate([list(c.devices_ids) for c in request.container_requests])
        except Refused as err:
            context.abort(_STATUS[err.kind], str(err))
        response = api.AllocateResponse()
        for answer in answers:
            response.container_responses.add().CopyFrom(answer)
        return response

    def PreStartContainer(self, request: api.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()  # not required: pre_start_required is false


class SocketServer:
    """A gRPC server for one ResourceService on ``<plugin dir>/<socket name>``, mode 0600."""

    def __init__(self, service: ResourceService, socket_path: Path) -> None:
        self.service = service
        self.socket_path = socket_path
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket this process bound

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
        try:
            unlink_if_exists(binding)  # left by a crash mid-serve; a stale socket_path is replaced below
            try:
                server.add_insecure_port(f"unix://{binding}")  # binds (and listens) now
            except RuntimeError:  # grpc's way of saying bind() failed, without the errno
                raise _bind_error(binding) from None
            os.chmod(binding, 0o600)
            st = os.lstat(binding)
            os.replace(binding, self.socket_path)  # a rename keeps the inode: it identifies our socket
        except OSError as err:
            server.stop(None)
            unlink_if_exists(binding)
            raise KvminfoError(f"{self.socket_path}: cannot serve the device plugin socket: {errno_text(err)}") from None
        server.start()
        self._server = server
        self._identity = (st.st_dev, st.st_ino)

    def stop(self, grace_s: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace_s).wait()

    def _binding_path(self) -> Path:
        # kvminfo-x.sock -> .kvminfo-x.tmp: as long as the real name, so it fits in sun_path
        # whenever the real one does (the config checks that).
        return self.socket_path.with_name(f".{self.socket_path.stem}.tmp")

    def owns_socket(self) -> bool:
        """Whether the socket path still holds the socket this process bound (another
        instance, e.g. the next pod of a DaemonSet update, may have replaced it)."""
        try:
            st = os.lstat(self.socket_path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def remove_socket(self) -> bool:
        """Unlink the socket if it is still ours; False when it was left in place."""
        if not self.owns_socket():
            return False
        unlink_if_exists(self.socket_path)
        return True


def _bind_error(path: Path) -> OSError:
    """grpc reports a failed bind without the errno; bind the same path ourselves to get it."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.bind(str(path))
    except OSError as err:
        return err
    finally:
        probe.close()
    unlink_if_exists(path)
    return OSError(errno.EADDRNOTAVAIL, "gRPC could not bind it (a plain bind works)")
