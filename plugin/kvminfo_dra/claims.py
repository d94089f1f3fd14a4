"""Pure: a ResourceClaim as the API server holds it -> what NodePrepareResources answers.

The claim's ``status.allocation.devices.results`` (k8s.io/api/resource/v1 types.go
DeviceRequestAllocationResult: request, driver, pool, device, shareID for a
device allocated many times) name the devices; the results of other drivers are
theirs to prepare. Every problem is one line (a ClaimError) and nothing is
answered for that claim: never half of its devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvminfo_dra.devices import CDI_KIND, Device
from kvminfo_dra.upstream import KvminfoError


class ClaimError(KvminfoError):
    pass


@dataclass(frozen=True)
class Prepared:
    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None = None


def prepare_claim(claim: Mapping[str, Any], uid: str, driver: str, pool: str,
                  devices: Mapping[str, Device]) -> list[Prepared]:
    meta = claim.get("metadata") or {}
    where = f"ResourceClaim {meta.get('namespace')}/{meta.get('name')}"
    if meta.get("uid") != uid:
        raise ClaimError(f"{where}: has uid {meta.get('uid')}, the kubelet asked for {uid} (the claim was "
                         "deleted and made again)")
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise ClaimError(f"{where}: is not allocated (no status.allocation)")
    ours = [r for r in (allocation.get("devices") or {}).get("results") or [] if r.get("driver") == driver]
    if not ours:
        raise ClaimError(f"{where}: allocates no device of driver {driver}")
    prepared = []
    for result in ours:
        device = devices.get(result.get("device", ""))
        if result.get("pool") != pool or device is None:
            raise ClaimError(f"{where}: device {result.get('pool')}/{result.get('device')} is not on this node "
                             f"(pool {pool} has {', '.join(devices) or 'no devices'})")
        prepared.append(Prepared((result.get("request", ""),), pool, device.name, (f"{CDI_KIND}={device.cdi_device}",),
                                 result.get("shareID")))
    return prepared
