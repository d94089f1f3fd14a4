"""Keeping this node's pool published: the slices as desired, a new pool generation
whenever what they publish changes, removal on uninstall.

The scheduler trusts the slices with the pool's highest generation; nothing else
ever replaces a stale one while the driver stays registered (FACTS.md section 5),
so a change of facts (a module reloaded, libvirt or QEMU upgraded, /dev/kvm gone)
is a new generation written here. New slices are written before extra old ones are
deleted, so the pool is never empty in between.
"""

from __future__ import annotations

import logging
from typing import Any

from kvminfo_dra.apiserver import ResourceApi
from kvminfo_dra.attributes import DRIVER
from kvminfo_dra.devices import Device, build_slices, for_version, same_content
from kvminfo_dra.upstream import KvminfoError
from kvminfo_dra.validation import check_slices

log = logging.getLogger(__name__)


def _generation(body: dict[str, Any]) -> int:
    return int(((body.get("spec") or {}).get("pool") or {}).get("generation") or 0)


def next_generation(existing: list[dict[str, Any]], desired: list[dict[str, Any]]) -> int:
    """Pure: the generation to publish ``desired`` (built with any generation) under: the
    current one when the published slices already say exactly this, else one more."""
    current = max((_generation(b) for b in existing), default=0)
    by_name = {b["metadata"]["name"]: b for b in existing}
    unchanged = (current > 0 and len(existing) == len(desired)
                 and all(_generation(b) == current for b in existing)
                 and all(d["metadata"]["name"] in by_name and same_content(by_name[d["metadata"]["name"]], d)
                         for d in desired))
    return current if unchanged else current + 1


class SlicePublisher:
    def __init__(self, api: ResourceApi, node: str, driver: str = DRIVER) -> None:
        self.api, self.node, self.driver = api, node, driver
        self.generation = 0
        self._warned_unshared = False

    def publish(self, devices: tuple[Device, ...]) -> bool:
        """Make the pool publish ``devices``; True when anything was written."""
        version = self.api.version or self.api.discover()
        if version != "v1" and any(d.shared for d in devices):
            raise KvminfoError(f"resource.k8s.io/{version} (Kubernetes < 1.34) has no shared devices "
                               "(allowMultipleAllocations): run the driver with --exclusive-kvm-devices N")
        existing = self.api.list_slices(self.node, self.driver)
        generation = next_generation(existing, build_slices(self.node, 1, devices, self.driver))
        desired = build_slices(self.node, generation, devices, self.driver)
        check_slices(desired)
        by_name = {b["metadata"]["name"]: b for b in existing}
        wrote = False
        for body in desired:
            name = body["metadata"]["name"]
            current = by_name.pop(name, None)
            if current is not None and _generation(current) == generation and same_content(current, body):
                continue
            out = for_version(body, version)
            if current is None:
                stored = self.api.create_slice(out)
            else:
                out["metadata"] = {**out["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
                stored = self.api.replace_slice(out)
            self._check_shared(body, stored)
            wrote = True
        for name in by_name:  # slices of an older, larger pool
            self.api.delete_slice(name)
            wrote = True
        if generation != self.generation:
            log.info("published pool %s generation %d (%d devices in %d slice(s), resource.k8s.io/%s)",
                     self.node, generation, len(devices), len(desired), version)
        self.generation = generation
        return wrote

    def _check_shared(self, sent: dict[str, Any], stored: dict[str, Any]) -> None:
        """A server whose DRAConsumableCapacity is off (alpha and off by default before 1.36) drops
        allowMultipleAllocations without an error: the kvm device is then allocatable once."""
        dropped = [d["name"] for d, s in zip(sent["spec"]["devices"], (stored.get("spec") or {}).get("devices") or [],
                                              strict=False)
                   if d.get("allowMultipleAllocations") and not s.get("allowMultipleAllocations")]
        if dropped and not self._warned_unshared:
            self._warned_unshared = True
            log.warning("the API server dropped allowMultipleAllocations from %s (feature gate DRAConsumableCapacity "
                        "off): each is allocatable to ONE claim at a time; turn the gate on, or run with "
                        "--exclusive-kvm-devices N", ", ".join(dropped))

    def remove(self) -> int:
        """Uninstall: delete every slice of this driver on this node; how many were deleted."""
        return sum(self.api.delete_slice(b["metadata"]["name"]) for b in self.api.list_slices(self.node, self.driver))
