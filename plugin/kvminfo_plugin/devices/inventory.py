"""A resource's units (device groups) -> slot IDs, the devices the kubelet sees.

A shared node like /dev/kvm is advertised as N slots ("devices" to the
kubelet) that all map to the same group; when a node of the group goes bad,
all the group's slots turn Unhealthy together. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvminfo_plugin.config import DeviceGroup, ResourceConfig, slot_id


@dataclass(frozen=True, slots=True)
class Inventory:
    """The slots of one resource: ID -> group, in advertising order."""

    resource: str
    group_of: dict[str, DeviceGroup]  # slot ID -> the group it hands out

    @classmethod
    def for_resource(cls, resource: ResourceConfig) -> Inventory:
        group_of = {slot_id(group, index, resource.slots): group
                    for group in resource.groups for index in range(resource.slots)}
        if len(group_of) != len(resource.groups) * resource.slots:
            raise ValueError(f"{resource.name}: two device groups give the same slot IDs")
        return cls(resource=resource.name, group_of=group_of)

    @property
    def ids(self) -> list[str]:
        return list(self.group_of)

    @property
    def groups(self) -> tuple[DeviceGroup, ...]:
        return tuple(dict.fromkeys(self.group_of.values()))

    def unknown(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i not in self.group_of]

    def groups_for(self, ids: list[str]) -> tuple[DeviceGroup, ...]:
        """Distinct groups behind ``ids``, in config order (slots share one group)."""
        wanted = {self.group_of[i] for i in ids}
        if len(wanted) <= 1:  # the common case (one group, e.g. /dev/kvm): no scan on the Allocate path
            return tuple(wanted)
        return tuple(g for g in self.groups if g in wanted)
