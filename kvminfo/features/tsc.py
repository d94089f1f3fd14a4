"""Pure rule: the host TSC as a VM with a fixed TSC frequency needs it.

Two sources that say the same thing (libvirt derives its answer from KVM):
- libvirt host capabilities ``<counter name='tsc' frequency='HZ' scaling='yes|no'/>``
  (what KubeVirt's node labeller reads for cpu-timer.node.kubevirt.io/tsc-frequency
  and tsc-scalable);
- KVM itself: KVM_GET_TSC_KHZ (x 1000 = Hz) and KVM_CAP_TSC_CONTROL (> 0: KVM can
  give a guest a TSC frequency other than the host's, i.e. "scalable").
On this host both say 2596134000 Hz, not scalable (TSC_CONTROL=0).

A guest whose TSC frequency is fixed (migrated, or invtsc) can start on a node
only if the node's TSC runs at that frequency or the node can scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kvminfo.sources.facts import KVM, LIBVIRT

if TYPE_CHECKING:
    from typing import Any


def tsc_info(libvirt_counter: Mapping[str, Any] | None, kvm_tsc_khz: int | None,
             kvm_caps: Mapping[str, int] | None) -> dict[str, Any] | None:
    """{frequency_hz:int, scalable:bool|None, said_by:"libvirt"|"kvm"} or None when nobody knows.

    libvirt's counter wins when present (it is what KubeVirt publishes); KVM's
    answer stands in when libvirt is not asked. ``scalable`` is None when
    neither libvirt nor KVM_CAP_TSC_CONTROL says.
    """
    caps = kvm_caps or {}
    kvm_scalable = caps["KVM_CAP_TSC_CONTROL"] > 0 if "KVM_CAP_TSC_CONTROL" in caps else None
    if libvirt_counter and libvirt_counter.get("frequency_hz"):
        scalable = libvirt_counter.get("scaling")
        return {"frequency_hz": libvirt_counter["frequency_hz"],
                "scalable": kvm_scalable if scalable is None else scalable, "said_by": LIBVIRT}
    if kvm_tsc_khz:
        return {"frequency_hz": kvm_tsc_khz * 1000, "scalable": kvm_scalable, "said_by": KVM}
    return None
