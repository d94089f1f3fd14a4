"""Pure rules: source facts -> per-evidence Hyper-V verdicts.

Evidence names: "kvm-caps" (the original caps/MSR table), "kvm-hv-cpuid"
(KVM_GET_SUPPORTED_HV_CPUID bits, with dependencies), "libvirt" (domain
capabilities). Each maps feature -> Support for the features it can speak
about; kvminfo.features.combine merges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kvminfo.features.hyperv_tables import (
    ALL_FEATURES,
    CAPS_TABLE,
    DECIDED_BY_CAPS_ALWAYS,
    HV_CPUID_TABLE,
    HYPERV_EMULATION_CAP,
    LIBVIRT_DEFAULTS_NAMES,
    LIBVIRT_NAMES,
    HvCpuidRule,
)
from kvminfo.model import SourceResult, Support
from kvminfo.sources.facts import LIBVIRT, KvmFacts

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start; only mypy needs it
if TYPE_CHECKING:
    from kvminfo.sources.facts import HvCpuidEntry
    from kvminfo.sources.libvirt_facts import DomainCapabilities

Evidence = dict[str, dict[str, Support]]


def _support(flag: bool) -> Support:
    return Support.SUPPORTED if flag else Support.UNSUPPORTED


def legacy_verdicts(caps: Mapping[str, int], msrs: Iterable[int],
                    names: Sequence[str] = tuple(CAPS_TABLE)) -> dict[str, Support]:
    """The original table (and the caps-only extras): the capability > 0 and
    the MSR listed, where each is given."""
    listed = set(msrs)
    verdicts = {}
    for name in names:
        rule = CAPS_TABLE[name]
        cap_ok = rule.cap is None or caps.get(rule.cap, 0) > 0
        msr_ok = rule.msr is None or rule.msr in listed
        verdicts[name] = _support(cap_ok and msr_ok)
    return verdicts


def _registers(entries: Iterable[HvCpuidEntry]) -> dict[tuple[int, str], int]:
    """(leaf, register) -> value; index is always 0 for the Hyper-V leaves."""
    return {(e["function"], reg): e[reg] for e in entries for reg in ("eax", "ebx", "ecx", "edx")}


def hv_cpuid_verdicts(entries: Iterable[HvCpuidEntry],
                      table: Mapping[str, HvCpuidRule] = HV_CPUID_TABLE) -> dict[str, Support]:
    """Every bit set and every dependency supported (QEMU's rule)."""
    regs = _registers(entries)
    bits_set = {name: all(regs.get((b.leaf, b.register), 0) >> b.bit & 1 for b in rule.bits)
                for name, rule in table.items()}
    resolved: dict[str, bool] = {}

    def supported(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name not in resolved:
            if name in seen:  # a cycle in the table would be a bug; refuse rather than recurse forever
                raise ValueError(f"dependency cycle through {name!r}")
            deps = table[name].depends
            resolved[name] = bits_set[name] and all(supported(d, seen | {name}) for d in deps)
        return resolved[name]

    return {name: _support(supported(name)) for name in table}


def kvm_evidence(facts: KvmFacts) -> Evidence:
    """Without HV CPUID the caps/MSR table decides; with it, the bits decide
    every feature they describe and the table only base/synic2. A kernel
    without Hyper-V emulation (KVM_CAP_HYPERV 0) supports no feature at all,
    so then kvm-caps says "unsupported" for every one (whatever libvirt says)."""
    caps, msrs, hv_cpuid = facts.caps or {}, facts.msrs, facts.hv_cpuid
    if caps.get(HYPERV_EMULATION_CAP, 0) <= 0:
        return {"kvm-caps": {name: Support.UNSUPPORTED for name in ALL_FEATURES}}
    if hv_cpuid is None:
        return {"kvm-caps": legacy_verdicts(caps, msrs)}
    return {"kvm-caps": legacy_verdicts(caps, msrs, DECIDED_BY_CAPS_ALWAYS),
            "kvm-hv-cpuid": hv_cpuid_verdicts(hv_cpuid)}


def libvirt_evidence(domcaps: DomainCapabilities) -> Evidence:
    """Listed = supported, in the vocabulary but not listed = unsupported, no
    <hyperv> = no evidence; <defaults> flags (11.9+) say yes/no where present.

    Names outside the vocabulary are ignored: a label claims host support and
    we cannot know what a name we have never seen needs.
    """
    listed = domcaps.hyperv
    if listed is None:
        return {}
    listed_features = {LIBVIRT_NAMES.get(name) for name in listed}
    said = {feature: _support(feature in listed_features) for feature in LIBVIRT_NAMES.values() if feature}
    for libvirt_name, flag in domcaps.hyperv_defaults.items():
        if libvirt_name in LIBVIRT_DEFAULTS_NAMES and isinstance(flag, bool):
            said[LIBVIRT_DEFAULTS_NAMES[libvirt_name]] = _support(flag)
    return {LIBVIRT: said}  # evidence named after its source


def evidence_from_sources(sources: Iterable[SourceResult]) -> Evidence:
    """Only sources that answered (status ok) give evidence; which rules apply follows from the facts' type."""
    evidence: Evidence = {}
    for source in sources:
        if not source.ok:
            continue
        if isinstance(source.facts, KvmFacts):
            evidence.update(kvm_evidence(source.facts))
        elif source.name == LIBVIRT:
            from kvminfo.sources.libvirt_facts import LibvirtFacts  # loaded already: the source ran

            if isinstance(source.facts, LibvirtFacts) and source.facts.domcaps is not None:
                evidence.update(libvirt_evidence(source.facts.domcaps))
    return evidence
