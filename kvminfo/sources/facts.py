"""Typed facts: what each built-in source saw, as frozen value classes. Pure.

Sources (kvminfo/sources/*) build them; the rules (kvminfo/features/) and
renderers (kvminfo/labels/, kvminfo/output/) read them. Nothing here does I/O,
so the rules never import a source's I/O module. ``to_json()`` gives the
shape `kvminfo probe --json` prints (the same keys as before typing).

The source names below are the only spelling of each name: compare against
these constants, never against a bare string. Each source's facts live in
their own module (KvmFacts here, on every path; libvirt_facts, whitelist_facts)
with the source that fills them: a rule imports those lazily, once a result
of that source is in hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TypedDict

    class HvCpuidEntry(TypedDict):
        """One kvm_cpuid_entry2 of KVM_GET_SUPPORTED_HV_CPUID (linux/kvm.h), flags and padding dropped."""

        function: int
        index: int
        eax: int
        ebx: int
        ecx: int
        edx: int

KVM = "kvm"
LIBVIRT = "libvirt"
KERNEL_WHITELIST = "kernel-whitelist"


@dataclass(frozen=True, slots=True)
class KvmFacts:
    """What /dev/kvm (ioctls) and the host files said.

    nested: kvm_intel/kvm_amd ``nested`` parameter (None: no module);
    cpu_vendor: /proc/cpuinfo vendor_id in short form ("AMD", "Intel", ...).
    api_version: KVM_GET_API_VERSION, None when the device could not be asked.
    caps: KVM_CAP_NAME -> KVM_CHECK_EXTENSION answer; None when the device was
    not usable (then msrs, hv_cpuid* are meaningless). msrs: None when the
    kernel has no KVM_GET_MSR_INDEX_LIST (not x86). hv_cpuid: None when not
    obtainable (hv_cpuid_missing says why); hv_cpuid_via: "system" | "vcpu".
    """

    nested: bool | None = None
    cpu_vendor: str | None = None
    api_version: int | None = None
    caps: dict[str, int] | None = None
    msrs: list[int] | None = field(default_factory=list)
    hv_cpuid: list[HvCpuidEntry] | None = None
    hv_cpuid_via: str | None = None
    hv_cpuid_missing: str | None = None
    # Read only when a label family needs them (kvminfo.model.ProbeOptions.families):
    # tsc_khz: KVM_GET_TSC_KHZ on a throwaway VM ("tsc"), None when not read or refused
    # (tsc_missing then says why when it was tried);
    # module_params: kvm_amd sev/sev_es/sev_snp, kvm_intel tdx ("confidential"),
    # name -> True/False, None when the module does not say; None when not read.
    tsc_khz: int | None = None
    tsc_missing: str | None = None
    # invariant_tsc: whether the host TSC is invariant ("tsc"; kvm.read_invariant_tsc), None when
    # not read or nobody could say; invariant_tsc_said: what said so.
    invariant_tsc: bool | None = None
    invariant_tsc_said: str | None = None
    module_params: dict[str, bool | None] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.caps is None:  # the device could not be used: only what was learnt
            known: dict[str, Any] = {"nested": self.nested, "cpu_vendor": self.cpu_vendor}
            if self.module_params is not None:
                known["module_params"] = dict(self.module_params)
            if self.api_version is not None:
                known["api_version"] = self.api_version
            return known
        return {"api_version": self.api_version, "caps": dict(self.caps), "msrs": None if self.msrs is None else list(self.msrs),
                "hv_cpuid": None if self.hv_cpuid is None else [dict(e) for e in self.hv_cpuid],
                "hv_cpuid_via": self.hv_cpuid_via, "hv_cpuid_missing": self.hv_cpuid_missing,
                "nested": self.nested, "cpu_vendor": self.cpu_vendor, "tsc_khz": self.tsc_khz,
                "tsc_missing": self.tsc_missing, "invariant_tsc": self.invariant_tsc,
                "invariant_tsc_said": self.invariant_tsc_said,
                "module_params": None if self.module_params is None else dict(self.module_params)}
