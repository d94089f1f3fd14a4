"""Pure rules: facts -> per-evidence verdicts -> combined verdicts with provenance."""

from __future__ import annotations

import pytest

from kvminfo.features.combine import combine
from kvminfo.features.hyperv import (
    evidence_and_reasons,
    hv_cpuid_verdicts,
    kvm_evidence,
    legacy_verdicts,
    libvirt_evidence,
)
from kvminfo.features.hyperv_tables import (
    ALL_FEATURES,
    HV_CPUID_TABLE,
    LEGACY_NAMES,
    LEGACY_TABLE,
    LIBVIRT_DEFAULTS_NAMES,
    LIBVIRT_NAMES,
    LegacyRule,
)
from kvminfo.model import SourceResult, Status, Support
from kvminfo.sources.facts import KvmFacts
from kvminfo.sources.libvirt_facts import DomainCapabilities, LibvirtFacts

S, U, K = Support.SUPPORTED, Support.UNSUPPORTED, Support.UNKNOWN


def entries(**registers: int) -> list[dict[str, int]]:
    """entries(f40000003_eax=..., ...) -> HV CPUID entries."""
    leaves: dict[int, dict[str, int]] = {}
    for key, value in registers.items():
        leaf, reg = key[1:].split("_")
        leaves.setdefault(int(leaf, 16), {"eax": 0, "ebx": 0, "ecx": 0, "edx": 0})[reg] = value
    return [{"function": f, "index": 0, **regs} for f, regs in leaves.items()]


def all_bits_set() -> list[dict[str, int]]:
    return entries(f40000003_eax=0xFFFFFFFF, f40000003_edx=0xFFFFFFFF,
                   f40000004_eax=0xFFFFFFFF, f4000000a_eax=0xFFFFFFFF)


def test_the_twelve_legacy_names_and_their_rules():
    assert LEGACY_NAMES == ("base", "time", "vpindex", "tlbflush", "ipi", "synic", "synic2", "frequencies",
                            "reset", "runtime", "synictimer", "reenlightenment")
    assert LEGACY_TABLE["synic"] == LegacyRule("KVM_CAP_HYPERV_SYNIC", 0x40000080)
    assert LEGACY_TABLE["frequencies"] == LegacyRule(None, 0x40000022)


def test_legacy_cap_and_msr_are_both_required():
    caps = {"KVM_CAP_HYPERV": 1, "KVM_CAP_HYPERV_VP_INDEX": 1, "KVM_CAP_HYPERV_SYNIC": 0}
    verdicts = legacy_verdicts(caps, [0x40000080, 0x40000003])
    assert verdicts["base"] is S
    assert verdicts["vpindex"] is U  # cap yes, HV_X64_MSR_VP_INDEX missing
    assert verdicts["synic"] is U  # MSR yes, cap 0
    assert verdicts["reset"] is S  # MSR-only rule
    assert verdicts["time"] is U  # cap absent counts as 0


def test_hv_cpuid_each_feature_needs_all_its_bits():
    only_eax11 = entries(f40000003_eax=1 << 11)
    assert hv_cpuid_verdicts(only_eax11)["frequencies"] is U
    both = entries(f40000003_eax=1 << 11, f40000003_edx=1 << 8)
    assert hv_cpuid_verdicts(both)["frequencies"] is S
    assert hv_cpuid_verdicts(entries(f40000003_eax=1 << 1))["time"] is U  # bit 9 missing


def test_hv_cpuid_dependencies_chain():
    verdicts = hv_cpuid_verdicts(all_bits_set())
    assert set(verdicts.values()) == {S}
    no_time = entries(f40000003_eax=0xFFFFFFFF & ~(1 << 9), f40000003_edx=0xFFFFFFFF,
                      f40000004_eax=0xFFFFFFFF, f4000000a_eax=0xFFFFFFFF)
    verdicts = hv_cpuid_verdicts(no_time)
    assert verdicts["time"] is U and verdicts["synictimer"] is U and verdicts["stimer-direct"] is U
    assert verdicts["synic"] is S
    no_vapic = entries(f40000003_eax=0xFFFFFFFF & ~(1 << 4), f40000003_edx=0xFFFFFFFF,
                       f40000004_eax=0xFFFFFFFF, f4000000a_eax=0xFFFFFFFF)
    verdicts = hv_cpuid_verdicts(no_vapic)
    assert verdicts["evmcs"] is U and verdicts["tlbflush-direct"] is U and verdicts["relaxed"] is S


def test_hv_cpuid_table_dependencies_exist_and_do_not_cycle():
    for name, rule in HV_CPUID_TABLE.items():
        assert set(rule.depends) <= set(HV_CPUID_TABLE), name
    with pytest.raises(ValueError, match="cycle"):
        from kvminfo.features.hyperv_tables import CpuidBit, HvCpuidRule
        bit = (CpuidBit(0x40000003, "eax", 0),)
        hv_cpuid_verdicts(all_bits_set(), {"a": HvCpuidRule(bit, ("b",)), "b": HvCpuidRule(bit, ("a",))})


def test_kvm_evidence_without_hv_cpuid_is_the_caps_table_only():
    evidence = kvm_evidence(KvmFacts(caps={"KVM_CAP_HYPERV": 1, "KVM_CAP_HYPERV_VAPIC": 1}, msrs=[], hv_cpuid=None))
    assert set(evidence) == {"kvm-caps"}
    assert set(evidence["kvm-caps"]) == set(LEGACY_NAMES) | {"relaxed", "vapic", "evmcs"}
    said = evidence["kvm-caps"]
    assert said["relaxed"] is S and said["vapic"] is S and said["evmcs"] is U and said["base"] is S


def test_no_hyperv_emulation_means_every_feature_unsupported():
    evidence = kvm_evidence(KvmFacts(caps={"KVM_CAP_HYPERV": 0}, msrs=[0x40000002], hv_cpuid=None))
    assert evidence == {"kvm-caps": {name: U for name in ALL_FEATURES}}
    verdicts = combine({**evidence, "libvirt": {"relaxed": S, "avic": S}})
    assert {v.support for v in verdicts} == {U}


def test_kvm_evidence_with_hv_cpuid_leaves_only_base_and_synic2_to_the_table():
    facts = KvmFacts(caps={"KVM_CAP_HYPERV": 1, "KVM_CAP_HYPERV_SYNIC2": 0}, msrs=[], hv_cpuid=all_bits_set())
    evidence = kvm_evidence(facts)
    assert evidence["kvm-caps"] == {"base": S, "synic2": U}
    # the table would say vpindex unsupported (no MSR); the bits decide it now
    assert evidence["kvm-hv-cpuid"]["vpindex"] is S


def test_libvirt_listed_unlisted_and_absent():
    assert libvirt_evidence(DomainCapabilities(hyperv=None)) == {}  # no <hyperv>: unknown, not evidence
    said = libvirt_evidence(DomainCapabilities(
        hyperv=["relaxed", "stimer", "emsr_bitmap", "spinlocks", "vendor_id", "new_thing"]))
    said = said["libvirt"]
    assert said["relaxed"] is S and said["synictimer"] is S and said["emsr-bitmap"] is S
    assert said["vpindex"] is U  # in the vocabulary, not listed
    assert "spinlocks" not in said and "vendor_id" not in said and "new_thing" not in said
    assert "stimer-direct" not in said  # only 11.9's <defaults> can speak about it


def test_libvirt_defaults_flags():
    said = libvirt_evidence(DomainCapabilities(hyperv=[], hyperv_defaults={
        "stimer_direct": True, "tlbflush_extended": False, "spinlocks": 4095}))["libvirt"]
    assert said["stimer-direct"] is S and said["tlbflush-ext"] is U and "tlbflush-direct" not in said
    assert set(LIBVIRT_DEFAULTS_NAMES.values()) <= set(HV_CPUID_TABLE)


def test_every_libvirt_name_maps_to_a_known_feature():
    features = set(HV_CPUID_TABLE) | set(LEGACY_NAMES)
    assert {n for n in LIBVIRT_NAMES.values() if n} <= features


def test_combine_rules_and_provenance():
    verdicts = {v.name: v for v in combine({
        "kvm-caps": {"base": S, "synic": U, "time": S},
        "libvirt": {"synic": S, "relaxed": S, "time": K},
    }, features=("base", "synic", "time", "relaxed", "crash"))}
    assert verdicts["base"].support is S and dict(verdicts["base"].said_by) == {"kvm-caps": S}
    assert verdicts["synic"].support is U  # one knowing source says no
    assert dict(verdicts["synic"].said_by) == {"kvm-caps": U, "libvirt": S}
    assert verdicts["time"].support is S and "libvirt" not in verdicts["time"].said_by  # unknown is not evidence
    assert verdicts["relaxed"].support is S
    assert verdicts["crash"].support is K and not verdicts["crash"].said_by


def test_only_sources_that_answered_give_evidence():
    kvm = SourceResult("kvm", Status.ERROR, "boom", KvmFacts(caps={"KVM_CAP_HYPERV": 1}, msrs=[], hv_cpuid=None))
    libvirt = SourceResult("libvirt", Status.OK, "", LibvirtFacts(domcaps=DomainCapabilities(hyperv=["relaxed"])))
    evidence, _ = evidence_and_reasons([kvm, libvirt])
    assert set(evidence) == {"libvirt"}
