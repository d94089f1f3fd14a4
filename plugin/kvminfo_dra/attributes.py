"""Pure: the node's virtualization facts (a kvminfo Report, the labels' own probe) -> the
typed attributes of the ``kvm`` device, in resource.k8s.io/v1's JSON form
(``{"bool": true}``, ``{"int": 12}``, ``{"string": "AMD"}``, ``{"version": "9.0.0"}``).

A fact the probe does not have is an attribute that is absent, never a false or
zero one: a selector that needs it then does not match (guard it with ``has()``).

Hyper-V carriage. The API allows 32 attributes and capacities per device
(ResourceSliceMaxAttributesAndCapacitiesPerDevice) and list values are alpha
and off in 1.36 (DRAListTypeAttributes). The probe knows 22 enlightenments;
with the 15 general attributes one bool each would be 37. So the enlightenments
are carried in five string attributes, one per fixed group (HYPERV_GROUPS: an
enlightenment is always in the same attribute, whatever the host), each value
the group's supported names between commas, e.g. ``",synic,synictimer,"``.
An enlightenment whose support is unknown is written ``?name`` (so ``,name,``
never matches it, and "unsupported" is selectable as neither ``,name,`` nor
``,?name,``); a group none of whose names is known is absent. A selector reads
``device.attributes["kvm.kvminfo.io"].hypervSynic.contains(",synic,")``:
standard CEL, one call per enlightenment, no bit arithmetic. Each value fits
the 64-character limit even in the worst case (checked at start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kvminfo_dra.upstream import KVM, LIBVIRT, Report, Support

# Our driver: a DNS subdomain (<= 63 characters, DriverNameMaxLength) under the project's domain.
DRIVER = "kvm.kvminfo.io"

# attribute ID -> the enlightenments it carries (kvminfo's canonical names), by what they are for.
HYPERV_GROUPS: dict[str, tuple[str, ...]] = {
    "hypervBase": ("base", "relaxed", "vapic", "vpindex", "reset", "crash", "runtime"),
    "hypervSynic": ("synic", "synic2", "synictimer", "stimer-direct"),
    "hypervTime": ("time", "frequencies", "reenlightenment"),
    "hypervTlb": ("tlbflush", "tlbflush-ext", "tlbflush-direct", "ipi", "xmm-input"),
    "hypervAssist": ("evmcs", "avic", "emsr-bitmap"),
}
# The confidential-computing verdicts (kvminfo.features.confidential names) -> attribute ID.
CONFIDENTIAL = {"sev": "sev", "sev-es": "sevEs", "sev-snp": "sevSnp", "tdx": "tdx", "sgx": "sgx"}

# semver 2.0.0 (semver.org's regular expression), what a `version` attribute must be.
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
                     r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")


def hyperv_value(names: tuple[str, ...], support: Mapping[str, Support]) -> str | None:
    """One group's value; None (no attribute) when none of its names is known."""
    known = [n for n in names if support.get(n, Support.UNKNOWN) is not Support.UNKNOWN]
    if not known:
        return None
    shown = [n if support[n] is Support.SUPPORTED else f"?{n}"
             for n in names if support.get(n, Support.UNKNOWN) is not Support.UNSUPPORTED]
    return f",{','.join(shown)}," if shown else ""


def _put(out: dict[str, dict[str, Any]], name: str, kind: str, value: Any) -> None:
    if value is None:
        return
    if kind == "version":
        if not isinstance(value, str) or not SEMVER.fullmatch(value):
            return  # a release string that is not semver cannot be a version attribute
    out[name] = {kind: value}


def kvm_attributes(report: Report) -> dict[str, dict[str, Any]]:
    """The kvm device's attributes (bare IDs: the driver's own domain)."""
    out: dict[str, dict[str, Any]] = {}
    kvm = report.source(KVM)
    kvm_facts: Any = kvm.facts if kvm is not None and kvm.ok else None
    if kvm_facts is not None:
        _put(out, "kvmApiVersion", "int", kvm_facts.api_version)
        _put(out, "cpuVendor", "string", kvm_facts.cpu_vendor)
        _put(out, "nested", "bool", kvm_facts.nested)
    libvirt = report.source(LIBVIRT)
    libvirt_facts: Any = libvirt.facts if libvirt is not None and libvirt.ok else None
    domcaps = libvirt_facts.domcaps if libvirt_facts is not None else None
    if domcaps is not None:
        _put(out, "arch", "string", domcaps.arch)
    if libvirt_facts is not None:
        _put(out, "libvirtVersion", "version", libvirt_facts.libvirt_version)
        _put(out, "qemuVersion", "version", libvirt_facts.qemu_version)
    families: Any = report.families
    if families is not None:
        _put(out, "hostModel", "string", families.host_model)
        for verdict in families.confidential:
            if verdict.name in CONFIDENTIAL and verdict.support is not Support.UNKNOWN:
                out[CONFIDENTIAL[verdict.name]] = {"bool": verdict.support is Support.SUPPORTED}
        tsc = families.tsc or {}
        _put(out, "tscFrequencyHz", "int", tsc.get("frequency_hz"))
        _put(out, "tscScalable", "bool", tsc.get("scalable"))
        _put(out, "maxVcpus", "int", families.max_vcpus)
    support = {f.name: f.support for f in report.features}
    for attribute, names in HYPERV_GROUPS.items():
        _put(out, attribute, "string", hyperv_value(names, support))
    return out
