"""GetPreferredAllocation does work in proportion to what is asked, not to the
slot count (issue 12: it sorted every available ID, 90 ms at 100,000 slots).

The kubelet sends every free slot as available_deviceIDs and mostly asks for
one (devicesToAllocate in the kubelet's device manager). Slots of a group hand
out the same nodes, so any will do: the first ones given are taken, after the
must-include ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from plugin_harness import TEST_RESOURCE, device_settings, kubelet, running_plugin

from kvminfo_plugin.devices.allocation import preferred
from kvminfo_plugin.kubelet.v1beta1 import api_pb2 as api


class Reader:
    """An iterable that counts how many items were taken from it."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        for item in self.items:
            self.taken += 1
            yield item


def test_available_is_read_only_as_far_as_needed() -> None:
    available = Reader([f"kvm-{i:05d}" for i in range(100_000)])
    assert preferred(available, [], 1) == ["kvm-00000"]
    assert available.taken == 1
    # must-include first; an available ID already among them is skipped, not repeated
    available = Reader(["kvm-00000", "kvm-00001", "kvm-00002", "kvm-00003"] + [f"x-{i}" for i in range(99_996)])
    assert preferred(available, ["kvm-00001"], 3) == ["kvm-00001", "kvm-00000", "kvm-00002"]
    assert available.taken == 3
    # must-include alone fills the size: available is not read at all
    available = Reader(["kvm-00000"])
    assert preferred(available, ["kvm-00005", "kvm-00003"], 1) == ["kvm-00005"]
    assert available.taken == 0


def test_every_slot_available_over_grpc(plugin_dir: Path, device: Path) -> None:
    with kubelet(plugin_dir) as k, running_plugin(device_settings(plugin_dir, device, slots=10_000)):
        k.wait_registered(TEST_RESOURCE)
        ids = list(k.latest(TEST_RESOURCE))
        assert len(ids) == 10_000
        response = k.stub(TEST_RESOURCE).GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
            api.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=1),
            api.ContainerPreferredAllocationRequest(available_deviceIDs=ids[::-1], must_include_deviceIDs=[ids[17]],
                                                    allocation_size=3)]), timeout=5)
        one, three = (list(r.deviceIDs) for r in response.container_responses)
        assert one == ids[:1]
        assert three == [ids[17], ids[-1], ids[-2]]
        k.admit(TEST_RESOURCE, 1)  # and admission (preferred -> Allocate) works end to end
