"""The Allocate seam: what a container gets for the device groups behind its IDs.

A policy turns the groups of one container into a ContainerAllocateResponse.
The resource's config picks it (``ResourceConfig.allocation``, a key of
``POLICIES``): ``deviceSpec`` sends DeviceSpecs, mounts and env; ``cdi`` sends
the fully qualified CDI names as well (the runtime reads the spec written by
kvminfo_plugin.devices.cdi). A resource with its own Allocate
behaviour is one class with this shape plus one line in ``POLICIES`` and the
config value that selects it.

Also here, pure: which IDs GetPreferredAllocation answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from kvminfo_plugin.config import DeviceGroup, ResourceConfig
from kvminfo_plugin.devices.cdi import qualified_name
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api


class AllocatePolicy(Protocol):
    def container_response(self, groups: tuple[DeviceGroup, ...]) -> api.ContainerAllocateResponse:
        """The answer for one container given ``groups`` (never empty). Pure: the
        result is cached per set of groups and copied for every Allocate."""
        ...

    def describe(self, groups: tuple[DeviceGroup, ...]) -> str:
        """What the container gets, for the one log line per allocation."""
        ...


class DeviceSpecPolicy:
    """Each node of the groups as a DeviceSpec (host path = container path), plus
    the resource's mounts and env: works with every runtime."""

    def __init__(self, resource: ResourceConfig) -> None:
        self._resource = resource

    def container_response(self, groups: tuple[DeviceGroup, ...]) -> api.ContainerAllocateResponse:
        resource = self._resource
        return api.ContainerAllocateResponse(
            envs=dict(resource.envs),
            mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                    for m in resource.mounts],
            devices=[api.DeviceSpec(container_path=p, host_path=p, permissions=resource.permissions)
                     for p in _paths(groups)])

    def describe(self, groups: tuple[DeviceGroup, ...]) -> str:
        return ",".join(_paths(groups))


class CdiPolicy:
    """The CDI names of the groups, and the same DeviceSpecs, mounts and env as
    DeviceSpecPolicy. A runtime without CDI (containerd 1.6, or 1.7 with
    enable_cdi = false) drops the names without a word; the DeviceSpecs still give
    the container its nodes, so a pod never starts without its device. A CDI runtime
    applies the spec over them: for each device node and mount it first removes
    the entry with the same container path (container-device-interface
    pkg/cdi/container-edits.go ContainerEdits.Apply: RemoveDevice/RemoveMount), and
    env entries replace those of the same name, so nothing reaches the container
    twice."""

    def __init__(self, resource: ResourceConfig) -> None:

        self._specs = DeviceSpecPolicy(resource)
        self._names = {g: qualified_name(resource, g) for g in resource.groups}

    def container_response(self, groups: tuple[DeviceGroup, ...]) -> api.ContainerAllocateResponse:
        response = self._specs.container_response(groups)
        response.cdi_devices.extend(api.CDIDevice(name=self._names[g]) for g in groups)
        return response

    def describe(self, groups: tuple[DeviceGroup, ...]) -> str:
        return ",".join(self._names[g] for g in groups)


PolicyFactory = Callable[[ResourceConfig], AllocatePolicy]
POLICIES: dict[str, PolicyFactory] = {"deviceSpec": DeviceSpecPolicy, "cdi": CdiPolicy}


def policy_for(resource: ResourceConfig) -> AllocatePolicy:
    return POLICIES[resource.allocation](resource)


class ResponseCache:
    """A policy's answers, built once per set of groups (a resource has a handful
    of groups, so few sets ever occur); the caller copies them in C."""

    def __init__(self, policy: AllocatePolicy) -> None:
        self.policy = policy
        self._responses: dict[tuple[DeviceGroup, ...], api.ContainerAllocateResponse] = {(): api.ContainerAllocateResponse()}

    def get(self, groups: tuple[DeviceGroup, ...]) -> api.ContainerAllocateResponse:
        cached = self._responses.get(groups)
        if cached is None:
            cached = self._responses[groups] = self.policy.container_response(groups)
        return cached


def preferred(available: Iterable[str], must_include: Iterable[str], size: int) -> list[str]:
    """must_include first, then available ones in the order given, never more than ``size``.

    Slots of a group are interchangeable (they hand out the same nodes), so any
    available ID will do: the first ones are taken and ``available`` is read only
    as far as needed. The kubelet sends every free slot (all 100,000 of a large
    resource) for a request of one, so this work stays the same at any slot count.

    The kubelet's device manager (devicesToAllocate) passes as must_include the devices it
    already took for this container (reused from init containers) and as size the total it
    needs; it only asks when it still needs more, so must_include < size there. It keeps
    only the IDs it can use and fills any shortfall itself, so when a caller sends more
    must_include than size, the first ``size`` of them are the faithful answer."""
    picked = list(dict.fromkeys(must_include))[:max(size, 0)]
    if len(picked) < size:
        chosen = set(picked)
        for device_id in available:  # a protobuf repeated field makes each str only when reached
            if device_id not in chosen:
                picked.append(device_id)
                chosen.add(device_id)
                if len(picked) >= size:
                    break
    return picked


def _paths(groups: tuple[DeviceGroup, ...]) -> list[str]:
    return list(dict.fromkeys(p for g in groups for p in g.paths))
