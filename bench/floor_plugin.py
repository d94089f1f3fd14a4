"""The floor for the device plugin benchmarks: a minimal device plugin written
with plain grpcio, the least any Python device plugin does.

    python bench/floor_plugin.py PLUGIN_DIR NAME=SLOTS [NAME=SLOTS ...]

For each resource: one gRPC server (the plugin's own thread pool size,
``MAX_WORKERS``) on ``PLUGIN_DIR/floor-<n>.sock``, then one Register call to
``PLUGIN_DIR/kubelet.sock``. ListAndWatch sends every slot Healthy once and
then blocks until exit; Allocate answers one DeviceSpec (/dev/null) per
container; GetPreferredAllocation takes the must-include IDs, then available
ones in the order given, up to the size. No config file, no health checks, no
metrics, no logging. SIGTERM/SIGINT: stop the servers (1 s grace, as the plugin),
remove the sockets, exit 0.

It imports only grpc and the generated v1beta1 modules (the same ones the
plugin uses, so both carry the same protobuf cost).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.kubelet.v1beta1 import api_pb2_grpc as api_grpc

MAX_WORKERS = 8  # kvminfo_plugin.kubelet.server.MAX_WORKERS, not imported: that would import the plugin


class Floor(api_grpc.DevicePluginServicer):
    def __init__(self, slots: int, stop: threading.Event) -> None:
        self._listing = api.ListAndWatchResponse(devices=[api.Device(ID=f"floor-{i}", health="Healthy") for i in range(slots)])
        self._stop = stop

    def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return api.DevicePluginOptions(get_preferred_allocation_available=True)

    def ListAndWatch(self, request, context):  # type: ignore[no-untyped-def]
        yield self._listing
        self._stop.wait()

    def GetPreferredAllocation(self, request, context):  # type: ignore[no-untyped-def]
        response = api.PreferredAllocationResponse()
        for container in request.container_requests:
            picked = list(container.must_include_deviceIDs)
            chosen = set(picked)
            for device_id in container.available_deviceIDs:
                if len(picked) >= container.allocation_size:
                    break
                if device_id not in chosen:
                    picked.append(device_id)
            response.container_responses.add(deviceIDs=picked)
        return response

    def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        response = api.AllocateResponse()
        for _ in request.container_requests:
            response.container_responses.add(devices=[api.DeviceSpec(container_path="/dev/null", host_path="/dev/null",
                                                                       permissions="rw")])
        return response

    def PreStartContainer(self, request, context):  # type: ignore[no-untyped-def]
        return api.PreStartContainerResponse()


def main(argv: list[str]) -> int:
    plugin_dir, resources = argv[0], [a.split("=") for a in argv[1:]]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    servers, sockets = [], []
    for index, (name, slots) in enumerate(resources):
        endpoint = f"floor-{index}.sock"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS))
        api_grpc.add_DevicePluginServicer_to_server(Floor(int(slots), stop), server)
        server.add_insecure_port(f"unix://{plugin_dir}/{endpoint}")
        server.start()
        servers.append(server)
        sockets.append(f"{plugin_dir}/{endpoint}")
        with grpc.insecure_channel(f"unix://{plugin_dir}/kubelet.sock") as channel:
            api_grpc.RegistrationStub(channel).Register(api.RegisterRequest(
                version="v1beta1", endpoint=endpoint, resource_name=name,
                options=api.DevicePluginOptions(get_preferred_allocation_available=True)), timeout=10)
    stop.wait()
    for server in servers:
        server.stop(1.0).wait()
    for path in sockets:  # grpc core unlinks its unix socket on stop; make sure
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
