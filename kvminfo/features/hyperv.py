"""Pure rules: source facts -> per-evidence Hyper-V verdicts.

Evidence names: "kvm-caps" (the original caps/MSR table), "kvm-hv-cpuid"
(KVM_GET_SUPPORTED_HV_CPUID bits, with dependencies), "libvirt" (domain
capabilities). Each maps feature -> Support for the features it can speak
about; kvminfo.features.combine merges them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvminfo.features.hyperv_tables import (
    ALL_FEATURES,
    CAPS_TABLE,
    DECIDED_BY_CAPS_ALWAYS,
    HV_CPUID_TABLE,
    HYPERV_EMULATION_CAP,
    LIBVIRT_DEFAULTS_NAME_SINCE,
    LIBVIRT_DEFAULTS_NAMES,
    LIBVIRT_DEFAULTS_SINCE,
    LIBVIRT_DOMCAPS_HYPERV_SINCE,
    LIBVIRT_NAME_SINCE,
    LIBVIRT_NAMES,
    LIBVIRT_NEEDS_QEMU_6_2_SINCE,
    QEMU_REPORTS_HYPERV_SINCE,
    HvCpuidRule,
    LegacyRule,
    Version,
    domcaps_knows,
    parse_version,
)
from kvminfo.model import SourceResult, Support
from kvminfo.sources.facts import LIBVIRT, KvmFacts

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from kvminfo.sources.facts import HvCpuidEntry
    from kvminfo.sources.libvirt_facts import DomainCapabilities, LibvirtFacts

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
    caps, msrs, hv_cpuid = facts.caps or {}, facts.msrs or (), facts.hv_cpuid
    if caps.get(HYPERV_EMULATION_CAP, 0) <= 0:
        return {"kvm-caps": {name: Support.UNSUPPORTED for name in ALL_FEATURES}}
    if hv_cpuid is None:
        return {"kvm-caps": legacy_verdicts(caps, msrs)}
    return {"kvm-caps": legacy_verdicts(caps, msrs, DECIDED_BY_CAPS_ALWAYS),
            "kvm-hv-cpuid": hv_cpuid_verdicts(hv_cpuid)}


def _legacy_reason(rule: LegacyRule, caps: Mapping[str, int], listed: set[int]) -> str:
    parts = []
    if rule.cap is not None:
        parts.append(f"{rule.cap} = {caps.get(rule.cap, 0)}")
    if rule.msr is not None:
        parts.append(f"MSR {rule.msr:#x} {'listed' if rule.msr in listed else 'not in the MSR index list'}")
    return ", ".join(parts)


def _hv_cpuid_reason(rule: HvCpuidRule, regs: Mapping[tuple[int, str], int], said: Mapping[str, Support]) -> str:
    clear = [f"{b.leaf:#x}.{b.register.upper()} bit {b.bit}" for b in rule.bits
             if not regs.get((b.leaf, b.register), 0) >> b.bit & 1]
    if clear:
        return f"HV CPUID {', '.join(clear)} clear"
    missing = [d for d in rule.depends if said.get(d) is not Support.SUPPORTED]
    if missing:
        return f"needs {', '.join(missing)}"
    return "HV CPUID bits set" + (f", needs {', '.join(rule.depends)}: supported" if rule.depends else "")


def kvm_reasons(facts: KvmFacts) -> dict[str, dict[str, str]]:
    """evidence -> feature -> why, for exactly the verdicts kvm_evidence gives."""
    caps, listed, hv_cpuid = facts.caps or {}, set(facts.msrs or ()), facts.hv_cpuid
    if caps.get(HYPERV_EMULATION_CAP, 0) <= 0:
        why = f"{HYPERV_EMULATION_CAP} = {caps.get(HYPERV_EMULATION_CAP, 0)}: this KVM has no Hyper-V emulation"
        return {"kvm-caps": {name: why for name in ALL_FEATURES}}
    names = tuple(CAPS_TABLE) if hv_cpuid is None else DECIDED_BY_CAPS_ALWAYS
    reasons = {"kvm-caps": {name: _legacy_reason(CAPS_TABLE[name], caps, listed) for name in names}}
    if hv_cpuid is not None:
        regs, said = _registers(hv_cpuid), hv_cpuid_verdicts(hv_cpuid)
        reasons["kvm-hv-cpuid"] = {name: _hv_cpuid_reason(rule, regs, said) for name, rule in HV_CPUID_TABLE.items()}
    return reasons


def _speaking_for(libvirt_version: str | None) -> tuple[Version, str]:
    """(the libvirt version whose vocabulary silence speaks for, how we know it).

    A live connection reports its version (virConnectGetLibVersion); a replayed
    file carries none, so unless the operator named one (--libvirt-version),
    silence speaks only for the oldest <hyperv> vocabulary (libvirt 9.0.0's).
    """
    version = parse_version(libvirt_version)
    if version is not None:
        return version, f"libvirt {libvirt_version}"
    oldest = ".".join(map(str, LIBVIRT_DOMCAPS_HYPERV_SINCE))
    return LIBVIRT_DOMCAPS_HYPERV_SINCE, f"libvirt {oldest} (a replay without --libvirt-version)"


def _since(libvirt_name: str) -> str:
    since = LIBVIRT_NAME_SINCE.get(libvirt_name) or LIBVIRT_DEFAULTS_NAME_SINCE[libvirt_name]
    element = LIBVIRT_DEFAULTS_SINCE if libvirt_name in LIBVIRT_DEFAULTS_NAMES else LIBVIRT_DOMCAPS_HYPERV_SINCE
    return ".".join(map(str, max(since, element)))


def _qemu_hides(version: Version, qemu_version: str | None) -> str | None:
    """Why libvirt ``version``'s silence says nothing behind QEMU ``qemu_version`` (FACTS 7), or None."""
    qemu = parse_version(qemu_version)
    if qemu is None or qemu >= QEMU_REPORTS_HYPERV_SINCE or version >= LIBVIRT_NEEDS_QEMU_6_2_SINCE:
        return None
    return (f"QEMU {qemu_version} is older than {'.'.join(map(str, QEMU_REPORTS_HYPERV_SINCE))}, "
            f"which may leave it out of libvirt's list: silence says nothing")


def libvirt_findings(domcaps: DomainCapabilities, libvirt_version: str | None = None,
                     qemu_version: str | None = None) -> dict[str, tuple[Support, str]]:
    """feature -> (what libvirt's domain capabilities say, why), UNKNOWN included.

    libvirt's meaning (shared/corpus/domcaps/FACTS.md 3, 6, 11, 12): every
    `<enum name='features'>` value is supported; a name the answering libvirt
    (``libvirt_version``, "X.Y.Z"; None: a replay of unknown version, read as
    9.0.0, the oldest with <hyperv>) knows (hyperv_tables.domcaps_knows) but
    does not list is unsupported; a name newer than that libvirt says nothing;
    `<defaults>` on/off children (11.9+) say supported/unsupported, an absent
    child nothing; <hyperv supported='no'/> says unsupported for every name; no
    <hyperv> element says nothing at all. `spinlocks`/`vendor_id` are guest
    settings, never host features. Names outside the vocabulary are ignored: a
    label claims host support and we cannot know what an unknown name needs.
    ``qemu_version`` ("X.Y.Z", virConnectGetVersion; None: not known, as for a
    replay): behind a QEMU older than 6.1.0, libvirt before 11.2.0 may leave
    supported names out (FACTS.md 7), so an unlisted name says nothing there.
    """
    listed = domcaps.hyperv
    if listed is None:
        return {}
    version, whose = _speaking_for(libvirt_version)
    hidden_by_qemu = _qemu_hides(version, qemu_version)
    listed_names = set(listed)
    findings: dict[str, tuple[Support, str]] = {}
    for libvirt_name, feature in LIBVIRT_NAMES.items():
        if feature is None:
            continue
        if libvirt_name in listed_names:
            findings[feature] = (Support.SUPPORTED, f"{libvirt_name!r} listed in <hyperv>")
        elif domcaps.hyperv_supported is False:
            findings[feature] = (Support.UNSUPPORTED, "<hyperv supported='no'/>")
        elif hidden_by_qemu is not None:
            findings[feature] = (Support.UNKNOWN, f"{libvirt_name!r} not listed, but {hidden_by_qemu}")
        elif domcaps_knows(libvirt_name, version):
            findings[feature] = (Support.UNSUPPORTED, f"{libvirt_name!r} not listed, and {whose} knows it")
        else:
            findings[feature] = (Support.UNKNOWN, f"{libvirt_name!r} not listed, but it is newer "
                                                  f"({_since(libvirt_name)}) than {whose}: silence says nothing")
    for libvirt_name, feature in LIBVIRT_DEFAULTS_NAMES.items():
        flag = domcaps.hyperv_defaults.get(libvirt_name)
        if isinstance(flag, bool):
            findings[feature] = (_support(flag), f"<defaults><{libvirt_name}>{'on' if flag else 'off'}")
        else:
            findings[feature] = (Support.UNKNOWN, f"no <defaults><{libvirt_name}> on/off "
                                                  f"(libvirt {_since(libvirt_name)}+ reports it)")
    return findings


def _said(findings: Mapping[str, tuple[Support, str]]) -> dict[str, Support]:
    """libvirt_findings without the reasons and without UNKNOWN: what counts as evidence."""
    return {feature: said for feature, (said, _) in findings.items() if said is not Support.UNKNOWN}


def libvirt_evidence(domcaps: DomainCapabilities, libvirt_version: str | None = None,
                     qemu_version: str | None = None) -> Evidence:
    """What libvirt says (libvirt_findings), without the reasons and without UNKNOWN."""
    findings = libvirt_findings(domcaps, libvirt_version, qemu_version)
    return {LIBVIRT: _said(findings)} if findings else {}  # named after its source


def _hyperv_facts(sources: Iterable[SourceResult]) -> Iterator[KvmFacts | LibvirtFacts]:
    """The facts the Hyper-V rules read: every answered (status ok) KVM source's, and
    libvirt's when it gave domain capabilities. Which rules apply follows from the facts' type."""
    for source in sources:
        if not source.ok:
            continue
        if isinstance(source.facts, KvmFacts):
            yield source.facts
        elif source.name == LIBVIRT:
            from kvminfo.sources.libvirt_facts import LibvirtFacts  # loaded already: the source ran

            if isinstance(source.facts, LibvirtFacts) and source.facts.domcaps is not None:
                yield source.facts


def evidence_and_reasons(sources: Iterable[SourceResult]) -> tuple[Evidence, dict[str, dict[str, str]]]:
    """(evidence -> feature -> what it said, evidence -> feature -> why) in one walk over the
    answered sources (_hyperv_facts), libvirt's findings read once for both. Reasons cover
    libvirt's silences too (UNKNOWN is left out of the evidence, not out of the reasons)."""
    evidence: Evidence = {}
    reasons: dict[str, dict[str, str]] = {}
    for facts in _hyperv_facts(sources):
        if isinstance(facts, KvmFacts):
            evidence.update(kvm_evidence(facts))
            reasons.update(kvm_reasons(facts))
        elif facts.domcaps is not None:
            findings = libvirt_findings(facts.domcaps, facts.libvirt_version, facts.qemu_version)
            if findings:
                evidence[LIBVIRT] = _said(findings)
                reasons[LIBVIRT] = {feature: why for feature, (_, why) in findings.items()}
    return evidence, reasons
