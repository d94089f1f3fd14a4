"""Pure: which devices this node offers, and the ResourceSlices that publish them.

- ``kvm``: /dev/kvm with the node's facts as attributes (kvminfo_dra.attributes).
  On clusters with DRAConsumableCapacity (beta, on in 1.36) it is ONE device with
  ``allowMultipleAllocations: true``: every claim shares it, as every VM shares
  /dev/kvm. Where that gate is off, ``exclusive`` N > 0 publishes kvm-0 ... kvm-(N-1)
  instead, each allocatable once, all the same node (the device plugin's slots).
- ``tun`` (/dev/net/tun) and ``vhost-net`` (/dev/vhost-net) when present, and any
  configured character device, shared likewise.
Every device is injected through one CDI device of the same name (kvm-N use ``kvm``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvminfo_dra.attributes import DRIVER
from kvminfo_dra.validation import MAX_DEVICES

CDI_KIND = "kvm.kvminfo.io/device"  # vendor/class of our CDI spec: apart from the device plugin's
RESOURCE_VERSIONS = ("v1", "v1beta2", "v1beta1")  # newest first (FACTS.md section 3)


@dataclass(frozen=True)
class Device:
    name: str  # the device's name in the slice (a DNS label)
    kind: str  # "kvm", "tun", "vhost-net" or "char"
    cdi_device: str  # the CDI device that injects it
    paths: tuple[str, ...]
    attributes: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    shared: bool = True  # allowMultipleAllocations

    def to_api(self) -> dict[str, Any]:
        attributes = {"type": {"string": self.kind}, **self.attributes}
        body: dict[str, Any] = {"name": self.name, "attributes": attributes}
        if self.shared:
            body["allowMultipleAllocations"] = True
        return body


def node_devices(kvm_attributes: Mapping[str, dict[str, Any]] | None, others: Mapping[str, tuple[str, str]],
                 exclusive: int = 0) -> tuple[Device, ...]:
    """``kvm_attributes`` None: no /dev/kvm; ``others``: device name -> (kind, path) of the present ones."""
    devices: list[Device] = []
    if kvm_attributes is not None:
        if exclusive:
            devices += [Device(f"kvm-{i}", "kvm", "kvm", ("/dev/kvm",), kvm_attributes, shared=False)
                        for i in range(exclusive)]
        else:
            devices.append(Device("kvm", "kvm", "kvm", ("/dev/kvm",), kvm_attributes))
    devices += [Device(name, kind, name, (path,)) for name, (kind, path) in others.items()]
    return tuple(devices)


def slice_name(node: str, index: int) -> str:
    """``<node>-kvm.kvminfo.io-<i>``; a hash of the node name instead when that passes 253 characters."""
    name = f"{node}-{DRIVER}-{index}"
    if len(name) <= 253:
        return name
    return f"{hashlib.sha256(node.encode()).hexdigest()[:16]}-{DRIVER}-{index}"


def build_slices(node: str, generation: int, devices: tuple[Device, ...], driver: str = DRIVER) -> list[dict[str, Any]]:
    """The pool ``node`` (one per node, named after it) in resource.k8s.io/v1 form; at least one
    slice, so that a node without devices says so (an empty pool) rather than nothing."""
    chunks = [devices[i:i + MAX_DEVICES] for i in range(0, len(devices), MAX_DEVICES)] or [()]
    return [{
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": slice_name(node, i)},
        "spec": {"driver": driver, "nodeName": node,
                 "pool": {"name": node, "generation": generation, "resourceSliceCount": len(chunks)},
                 "devices": [d.to_api() for d in chunk]},
    } for i, chunk in enumerate(chunks)]


def for_version(body: dict[str, Any], version: str) -> dict[str, Any]:
    """A v1 slice as ``version`` spells it: v1beta2 is v1's shape; v1beta1 nests each
    device's fields under ``basic`` (k8s.io/api/resource/v1beta1 BasicDevice)."""
    out = {**body, "apiVersion": f"resource.k8s.io/{version}"}
    if version == "v1beta1":
        spec = dict(body["spec"])
        spec["devices"] = [{"name": d["name"], "basic": {k: v for k, v in d.items() if k != "name"}}
                           for d in spec["devices"]]
        out["spec"] = spec
    return out


def same_content(published: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a slice read back from the server (any version) publishes what ``desired`` does,
    generation aside."""
    def devices(body: dict[str, Any]) -> list[Any]:
        return [{"name": d["name"], **d["basic"]} if "basic" in d else d for d in body.get("spec", {}).get("devices") or []]

    return devices(published) == devices(desired)
