"""Pure data: which facts mean which Hyper-V enlightenment is supported.

Label suffixes (the canonical feature names) are lowercase with '-':
kvm-info-cap-hyperv-<name>. Sources: the original kvm-caps-info-nfd-plugin
table, QEMU's kvm_hyperv_properties (target/i386/kvm/kvm.c) for the HV CPUID
bits and dependencies, libvirt's domain capabilities vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hyper-V synthetic MSRs (hyperv-tlfs.h) that the original table looks for.
HV_X64_MSR_VP_INDEX = 0x40000002
HV_X64_MSR_RESET = 0x40000003
HV_X64_MSR_VP_RUNTIME = 0x40000010
HV_X64_MSR_TSC_FREQUENCY = 0x40000022
HV_X64_MSR_SCONTROL = 0x40000080
HV_X64_MSR_STIMER0_CONFIG = 0x400000B0
HV_X64_MSR_REENLIGHTENMENT_CONTROL = 0x40000106


@dataclass(frozen=True, slots=True)
class LegacyRule:
    """Supported when the capability is > 0 and the MSR is listed (each where given)."""

    cap: str | None
    msr: int | None


# The original kvm-caps-info-nfd-plugin table: the twelve names KubeVirt 0.16 to
# 0.39 selected on (feature.node.kubernetes.io/kvm-info-cap-hyperv-<name>);
# KubeVirt >= 0.40 labels hyperv.node.kubevirt.io/<name> itself and selects on that.
LEGACY_TABLE: dict[str, LegacyRule] = {
    "base": LegacyRule("KVM_CAP_HYPERV", None),
    "time": LegacyRule("KVM_CAP_HYPERV_TIME", None),
    "vpindex": LegacyRule("KVM_CAP_HYPERV_VP_INDEX", HV_X64_MSR_VP_INDEX),
    "tlbflush": LegacyRule("KVM_CAP_HYPERV_TLBFLUSH", None),
    "ipi": LegacyRule("KVM_CAP_HYPERV_SEND_IPI", None),
    "synic": LegacyRule("KVM_CAP_HYPERV_SYNIC", HV_X64_MSR_SCONTROL),
    "synic2": LegacyRule("KVM_CAP_HYPERV_SYNIC2", HV_X64_MSR_SCONTROL),
    "frequencies": LegacyRule(None, HV_X64_MSR_TSC_FREQUENCY),
    "reset": LegacyRule(None, HV_X64_MSR_RESET),
    "runtime": LegacyRule(None, HV_X64_MSR_VP_RUNTIME),
    "synictimer": LegacyRule(None, HV_X64_MSR_STIMER0_CONFIG),
    "reenlightenment": LegacyRule(None, HV_X64_MSR_REENLIGHTENMENT_CONTROL),
}
LEGACY_NAMES: tuple[str, ...] = tuple(LEGACY_TABLE)

# Kernels without HV CPUID (< 5.0) still announce these by capability; QEMU's
# legacy path (get_supported_hv_cpuid_legacy) offers relaxed and vapic
# whenever KVM has Hyper-V emulation at all, evmcs when its cap says so.
CAPS_ONLY_TABLE: dict[str, LegacyRule] = {
    "relaxed": LegacyRule("KVM_CAP_HYPERV", None),
    "vapic": LegacyRule("KVM_CAP_HYPERV_VAPIC", None),
    "evmcs": LegacyRule("KVM_CAP_HYPERV_ENLIGHTENED_VMCS", None),
}
CAPS_TABLE: dict[str, LegacyRule] = {**LEGACY_TABLE, **CAPS_ONLY_TABLE}

# KVM_CAP_HYPERV announces the kernel's Hyper-V emulation (it is 0 when the
# kernel has none, e.g. CONFIG_KVM_HYPERV=n); without it no enlightenment can work.
HYPERV_EMULATION_CAP = "KVM_CAP_HYPERV"

# HV CPUID describes neither of these, so the caps/MSR table keeps deciding them.
DECIDED_BY_CAPS_ALWAYS: tuple[str, ...] = ("base", "synic2")


@dataclass(frozen=True, slots=True)
class CpuidBit:
    leaf: int
    register: str  # "eax" | "ebx" | "ecx" | "edx"
    bit: int


@dataclass(frozen=True, slots=True)
class HvCpuidRule:
    """Supported when every bit is set and every dependency is supported."""

    bits: tuple[CpuidBit, ...]
    depends: tuple[str, ...] = ()


def _bits(leaf: int, register: str, *bits: int) -> tuple[CpuidBit, ...]:
    return tuple(CpuidBit(leaf, register, b) for b in bits)


_FEATURES = 0x40000003  # HYPERV_CPUID_FEATURES
_ENLIGHTMENT = 0x40000004  # HYPERV_CPUID_ENLIGHTMENT_INFO
_NESTED = 0x4000000A  # HYPERV_CPUID_NESTED_FEATURES

HV_CPUID_TABLE: dict[str, HvCpuidRule] = {
    "relaxed": HvCpuidRule(_bits(_ENLIGHTMENT, "eax", 5)),
    "vapic": HvCpuidRule(_bits(_FEATURES, "eax", 4)),
    "time": HvCpuidRule(_bits(_FEATURES, "eax", 1, 9)),
    "crash": HvCpuidRule(_bits(_FEATURES, "edx", 10)),
    "reset": HvCpuidRule(_bits(_FEATURES, "eax", 7)),
    "vpindex": HvCpuidRule(_bits(_FEATURES, "eax", 6)),
    "runtime": HvCpuidRule(_bits(_FEATURES, "eax", 0)),
    "synic": HvCpuidRule(_bits(_FEATURES, "eax", 2), ("vpindex",)),
    "synictimer": HvCpuidRule(_bits(_FEATURES, "eax", 3), ("synic", "time")),
    "frequencies": HvCpuidRule(_bits(_FEATURES, "eax", 11) + _bits(_FEATURES, "edx", 8)),
    "reenlightenment": HvCpuidRule(_bits(_FEATURES, "eax", 13)),
    "tlbflush": HvCpuidRule(_bits(_ENLIGHTMENT, "eax", 2, 11), ("vpindex",)),
    "evmcs": HvCpuidRule(_bits(_ENLIGHTMENT, "eax", 14), ("vapic",)),
    "ipi": HvCpuidRule(_bits(_ENLIGHTMENT, "eax", 10, 11), ("vpindex",)),
    "stimer-direct": HvCpuidRule(_bits(_FEATURES, "edx", 19), ("synictimer",)),
    "avic": HvCpuidRule(_bits(_ENLIGHTMENT, "eax", 9)),
    "emsr-bitmap": HvCpuidRule(_bits(_NESTED, "eax", 19)),
    "xmm-input": HvCpuidRule(_bits(_FEATURES, "edx", 4)),
    "tlbflush-ext": HvCpuidRule(_bits(_FEATURES, "edx", 14), ("tlbflush",)),
    "tlbflush-direct": HvCpuidRule(_bits(_NESTED, "eax", 17), ("vapic",)),
}

# libvirt's <hyperv><enum name='features'> vocabulary (9.0+) -> feature name.
# A name in it that is not listed means "unsupported". None: a guest setting
# that needs no host support (spinlock retry count, vendor id string), so it
# says nothing about the host and never becomes a label.
LIBVIRT_NAMES: dict[str, str | None] = {
    "relaxed": "relaxed",
    "vapic": "vapic",
    "spinlocks": None,
    "vpindex": "vpindex",
    "runtime": "runtime",
    "synic": "synic",
    "stimer": "synictimer",
    "reset": "reset",
    "vendor_id": None,
    "frequencies": "frequencies",
    "reenlightenment": "reenlightenment",
    "tlbflush": "tlbflush",
    "ipi": "ipi",
    "evmcs": "evmcs",
    "avic": "avic",
    "emsr_bitmap": "emsr-bitmap",
    "xmm_input": "xmm-input",
}
# libvirt 11.9+ <hyperv><defaults> children with supported='yes|no'; older
# libvirt has no such child, which says nothing (unknown).
LIBVIRT_DEFAULTS_NAMES: dict[str, str] = {
    "stimer_direct": "stimer-direct",
    "tlbflush_direct": "tlbflush-direct",
    "tlbflush_extended": "tlbflush-ext",
}

# When libvirt learnt each name: a libvirt lists only names it knows, so its
# silence about a name means "unsupported" only if it is at least this version.
# Sources (shared/corpus/domcaps/FACTS.md): the "since" column of libvirt's
# domain XML "Hypervisor features" table (FACTS 11), and the Go binding
# libvirt-go-xml-module, whose tags follow libvirt releases: domcaps gained
# <hyperv> in 9.0.0 (commit cf606ba, tag v1.9000.0; FACTS 8) and <defaults> in
# 11.9.0 (commit 029b57b, tag v1.11009.0; FACTS 8 and 12). No domcaps answer can
# name anything before 9.0.0, so the effective version of a value is the later
# of the two.
Version = tuple[int, int, int]
LIBVIRT_DOMCAPS_HYPERV_SINCE: Version = (9, 0, 0)
LIBVIRT_DEFAULTS_SINCE: Version = (11, 9, 0)
# FACTS 7: libvirt's domcaps documentation warned that with QEMU older than 6.1.0
# some supported enlightenments may be missing from <hyperv>'s list (QEMU did not
# report them); the warning went when libvirt 11.2.0 made QEMU 6.2.0 its minimum.
# So behind such a QEMU, libvirt's silence about a name says nothing.
QEMU_REPORTS_HYPERV_SINCE: Version = (6, 1, 0)
LIBVIRT_NEEDS_QEMU_6_2_SINCE: Version = (11, 2, 0)
LIBVIRT_NAME_SINCE: dict[str, Version] = {
    "relaxed": (1, 0, 0),
    "vapic": (1, 1, 0),
    "spinlocks": (1, 1, 0),
    "vpindex": (1, 3, 3),
    "runtime": (1, 3, 3),
    "synic": (1, 3, 3),
    "stimer": (1, 3, 3),
    "reset": (1, 3, 3),
    "vendor_id": (1, 3, 3),
    "frequencies": (4, 7, 0),
    "reenlightenment": (4, 7, 0),
    "tlbflush": (4, 7, 0),
    "ipi": (4, 10, 0),
    "evmcs": (4, 10, 0),
    "avic": (8, 10, 0),
    "emsr_bitmap": (10, 7, 0),
    "xmm_input": (10, 7, 0),
}
# <defaults> children (all from 11.9.0); the tlbflush direct/extended sub-modes
# exist in the domain XML since 11.0.0, stimer direct since 5.7.0, but domcaps
# reports them only through <defaults>.
LIBVIRT_DEFAULTS_NAME_SINCE: dict[str, Version] = {name: LIBVIRT_DEFAULTS_SINCE for name in LIBVIRT_DEFAULTS_NAMES}


def domcaps_knows(libvirt_name: str, version: Version) -> bool:
    """Whether a domcaps answer of libvirt ``version`` could list ``libvirt_name``
    (an enum value or a <defaults> child): both the name and its element existed."""
    since = LIBVIRT_NAME_SINCE.get(libvirt_name) or LIBVIRT_DEFAULTS_NAME_SINCE.get(libvirt_name)
    if since is None:
        return False
    element = LIBVIRT_DEFAULTS_SINCE if libvirt_name in LIBVIRT_DEFAULTS_NAME_SINCE else LIBVIRT_DOMCAPS_HYPERV_SINCE
    return version >= max(since, element)


def parse_version(text: str | None) -> Version | None:
    """A libvirt or QEMU release "MAJOR.MINOR.MICRO" ('9.0.0' -> (9, 0, 0), each part 1-6
    ASCII digits); None for anything else."""
    parts = text.split(".") if text is not None else []
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        return None
    return (int(parts[0]), int(parts[1]), int(parts[2]))


# Every feature any evidence can speak about, in a stable order for reports.
ALL_FEATURES: tuple[str, ...] = tuple(dict.fromkeys(
    [*LEGACY_NAMES, *HV_CPUID_TABLE, *(n for n in LIBVIRT_NAMES.values() if n), *LIBVIRT_DEFAULTS_NAMES.values()]))
