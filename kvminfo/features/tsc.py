"""Pure rule: the host TSC as a VM with a fixed TSC frequency needs it, only when it is invariant.

Two sources that say the same thing (libvirt derives its answer from KVM):
- libvirt host capabilities ``<counter name='tsc' frequency='HZ' scaling='yes|no'/>``
  (what KubeVirt's node labeller reads for cpu-timer.node.kubevirt.io/tsc-frequency
  and tsc-scalable);
- KVM itself: KVM_GET_TSC_KHZ (x 1000 = Hz) and KVM_CAP_TSC_CONTROL (> 0: KVM can
  give a guest a TSC frequency other than the host's, i.e. "scalable").

libvirt writes the counter only when the host TSC is invariant (src/cpu/cpu_x86.c,
virCPUx86GetHost: "Probing for TSC frequency makes sense only if the CPU supports
invariant TSC"), so libvirt and KubeVirt publish no frequency on hosts without it (many
cloud VMs used for nested KVM): a frequency that drifts with power states is no
frequency a migrated guest can be promised. So when libvirt's host capabilities
answered, their counter decides and its absence means no label; KVM's rate counts only
when libvirt did not answer and the host TSC is invariant
(kvminfo.sources.kvm.read_invariant_tsc).

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
             kvm_caps: Mapping[str, int] | None, host_caps_answered: bool = False,
             invariant: bool | None = None, invariant_said: str | None = None) -> dict[str, Any] | None:
    """{frequency_hz:int, scalable:bool|None, said_by:"libvirt"|"kvm", invariant: why the TSC is
    trusted to be invariant} or None when no stable TSC frequency is known.

    ``host_caps_answered``: libvirt's host capabilities were had (live or replayed): then their
    counter (``libvirt_counter``, None when absent) is the answer. Otherwise KVM's rate stands in,
    only when ``invariant`` is True. ``scalable`` is None when neither libvirt nor
    KVM_CAP_TSC_CONTROL says.
    """
    caps = kvm_caps or {}
    kvm_scalable = caps["KVM_CAP_TSC_CONTROL"] > 0 if "KVM_CAP_TSC_CONTROL" in caps else None
    if host_caps_answered or libvirt_counter:
        if not libvirt_counter or not libvirt_counter.get("frequency_hz"):
            return None
        scalable = libvirt_counter.get("scaling")
        return {"frequency_hz": libvirt_counter["frequency_hz"],
                "scalable": kvm_scalable if scalable is None else scalable, "said_by": LIBVIRT,
                "invariant": "libvirt writes the counter only for an invariant TSC"}
    if kvm_tsc_khz and invariant:
        return {"frequency_hz": kvm_tsc_khz * 1000, "scalable": kvm_scalable, "said_by": KVM,
                "invariant": invariant_said or "the host TSC is invariant"}
    return None
