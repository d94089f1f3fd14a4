"""One resource's devices as the kubelet sees them: slots, their health, the
current ListAndWatch list, GetPreferredAllocation and Allocate decisions, and
the metrics of all that. No gRPC here: kvminfo_plugin.kubelet.server adapts it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kvminfo_plugin.config import DeviceGroup, ResourceConfig
from kvminfo_plugin.devices.allocation import ResponseCache, policy_for, preferred
from kvminfo_plugin.devices.inventory import Inventory
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api
from kvminfo_plugin.telemetry.metrics import PluginMetrics

log = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


class Refused(Exception):
    """A call the plugin answers with an error. ``kind`` is the metrics label:
    ``unknown_device`` (the kubelet's INVALID_ARGUMENT) or ``allocate_unhealthy``
    (FAILED_PRECONDITION)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Listing:
    version: int
    response: api.ListAndWatchResponse


class DevicePool:
    """Thread-safe. Health comes in per device node (``set_path_health``); the
    listing is rebuilt on each change and waited for by ListAndWatch streams."""

    def __init__(self, resource: ResourceConfig, metrics: PluginMetrics) -> None:
        self.resource = resource
        self.inventory = Inventory.for_resource(resource)
        self._metrics = metrics
        self._cond = threading.Condition()
        self._healthy_paths: set[str] = set()
        # Replaced, never mutated: Allocate reads it without the lock.
        self._healthy_groups: frozenset[DeviceGroup] = frozenset()
        self._blocked = ""  # why every slot is Unhealthy whatever the nodes say ("": not blocked)
        self._closed = False
        self._responses = ResponseCache(policy_for(resource))
        # Counter children looked up once: .labels() takes a lock and a dict lookup per call.
        self._allocations = metrics.allocations.labels(resource.name)
        self.listing = self._build_listing(0)

    # ---- health -------------------------------------------------------------------------

    def set_path_health(self, path: str, healthy: bool) -> tuple[int, int]:
        """Record one node's health; a group is healthy when all its nodes are.
        Returns (Healthy slots, all slots) after the change."""
        with self._cond:
            if healthy:
                self._healthy_paths.add(path)
            else:
                self._healthy_paths.discard(path)
            return self._update()

    def set_blocked(self, reason: str) -> tuple[int, int]:
        """Every slot Unhealthy while ``reason`` is not empty (the CDI spec its
        answers name cannot be written: the runtime could not resolve them)."""
        with self._cond:
            self._blocked = reason
            return self._update()

    def _update(self) -> tuple[int, int]:
        groups = frozenset() if self._blocked else frozenset(
            g for g in self.inventory.groups if all(p in self._healthy_paths for p in g.paths))
        if groups != self._healthy_groups:
            self._healthy_groups = groups
            self.listing = self._build_listing(self.listing.version + 1)
            self._cond.notify_all()
        return len(groups) * self.resource.slots, len(self.inventory.group_of)

    def _build_listing(self, version: int) -> Listing:
        healthy = self._healthy_groups
        devices = [api.Device(ID=device_id, health=HEALTHY if group in healthy else UNHEALTHY)
                   for device_id, group in self.inventory.group_of.items()]
        good = sum(1 for d in devices if d.health == HEALTHY)
        self._metrics.set_devices(self.resource.name, good, len(devices) - good)
        return Listing(version, api.ListAndWatchResponse(devices=devices))

    def next_listing(self, after: int, still_wanted: Callable[[], bool]) -> Listing | None:
        """Block until the listing is newer than version ``after``; None once closed
        or when ``still_wanted()`` turns false (checked on every ``wake()``)."""
        with self._cond:
            self._cond.wait_for(lambda: self.listing.version != after or self._closed or not still_wanted())
            if self._closed or not still_wanted():
                return None
            return self.listing

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """End every wait in next_listing (the process is exiting)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---- allocation ---------------------------------------------------------------------

    def preferred(self, available: Iterable[str], must_include: Sequence[str], size: int) -> list[str]:
        """The IDs to prefer; only the must-include ones and those picked are checked
        (an unknown one is refused), so the cost does not grow with the slot count."""
        self.refuse_unknown(list(must_include), "GetPreferredAllocation")
        picked = preferred(available, must_include, size)
        self.refuse_unknown(picked, "GetPreferredAllocation")
        return picked

    def allocate(self, containers: list[list[str]]) -> list[api.ContainerAllocateResponse]:
        """One response per container request, in order (empty for a container that
        asked for none of this resource). Raises Refused for unknown IDs or an
        unhealthy group."""
        self.refuse_unknown([i for ids in containers for i in ids], "Allocate")
        healthy = self._healthy_groups
        per_container = [self.inventory.groups_for(ids) for ids in containers]
        bad = [g for groups in per_container for g in groups if g not in healthy]
        if bad:
            self._refuse("allocate_unhealthy", f"{self.resource.name}: device {'+'.join(bad[0].paths)} is unhealthy",
                         "Allocate: ")
        given = 0
        for ids, groups in zip(containers, per_container, strict=True):
            if groups:
                given += 1
                log.info("allocated %s %s -> %s", self.resource.name, ",".join(ids), self._responses.policy.describe(groups))
        if given:
            self._allocations.inc(given)
        return [self._responses.get(groups) for groups in per_container]

    def refuse_unknown(self, ids: list[str], call: str) -> None:
        unknown = self.inventory.unknown(ids)
        if unknown:
            self._refuse("unknown_device", f"{call}: unknown device ID {unknown[0]!r} for resource {self.resource.name}")

    def _refuse(self, kind: str, message: str, log_prefix: str = "") -> None:
        self._metrics.errors.labels(self.resource.name, kind).inc()
        log.warning("refused %s%s", log_prefix, message)
        raise Refused(kind, message)
