"""Typed facts: what each built-in source saw, as plain frozen dataclasses. Pure.

Sources (kvminfo/sources/*) build them; the rules (kvminfo/features/) and
renderers (kvminfo/labels/, kvminfo/output/) read them. Nothing here does I/O,
so the rules never import a source's I/O module. ``to_json()`` gives the
shape `kvminfo probe --json` prints (the same keys as before typing).

The source names below are the only spelling of each name: compare against
these constants, never against a bare string.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start; only mypy needs it
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


@dataclass(frozen=True)
class KvmFacts:
    """What /dev/kvm (ioctls) and the host files said.

    nested: kvm_intel/kvm_amd ``nested`` parameter (None: no module);
    cpu_vendor: /proc/cpuinfo vendor_id in short form ("AMD", "Intel", ...).
    api_version: KVM_GET_API_VERSION, None when the device could not be asked.
    caps: KVM_CAP_NAME -> KVM_CHECK_EXTENSION answer; None when the device was
    not usable (then msrs, hv_cpuid* are meaningless). hv_cpuid: None when not
    obtainable (hv_cpuid_missing says why); hv_cpuid_via: "system" | "vcpu".
    """

    nested: bool | None = None
    cpu_vendor: str | None = None
    api_version: int | None = None
    caps: dict[str, int] | None = None
    msrs: list[int] = field(default_factory=list)
    hv_cpuid: list[HvCpuidEntry] | None = None
    hv_cpuid_via: str | None = None
    hv_cpuid_missing: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.caps is None:  # the device could not be used: only what was learnt
            known: dict[str, Any] = {"nested": self.nested, "cpu_vendor": self.cpu_vendor}
            if self.api_version is not None:
                known["api_version"] = self.api_version
            return known
        return {"api_version": self.api_version, "caps": dict(self.caps), "msrs": list(self.msrs),
                "hv_cpuid": None if self.hv_cpuid is None else [dict(e) for e in self.hv_cpuid],
                "hv_cpuid_via": self.hv_cpuid_via, "hv_cpuid_missing": self.hv_cpuid_missing,
                "nested": self.nested, "cpu_vendor": self.cpu_vendor}


@dataclass(frozen=True)
class HostModel:
    """``<cpu><mode name='host-model' supported='yes'>``: its <model> and <vendor> text."""

    model: str | None = None
    vendor: str | None = None


@dataclass(frozen=True)
class DomainCapabilities:
    """One `virsh domcapabilities` document (libvirt's formatdomaincaps).

    hyperv: libvirt feature names ("stimer", "vendor_id", ...), [] when
    <hyperv supported='no'>, None when the element is absent (libvirt < 9.0:
    unknown); hyperv_supported likewise (None = absent); hyperv_defaults:
    libvirt >= 11.9 <defaults> children, tag -> int | str | bool ({} otherwise);
    host_model: None unless host-model is supported; custom_models: usable='yes'
    names in document order; sev/sgx/tdx: <features><NAME supported='yes'>.
    """

    domain_type: str | None = None
    arch: str | None = None
    machine: str | None = None
    emulator: str | None = None
    max_vcpus: int | None = None
    hyperv: list[str] | None = None
    hyperv_supported: bool | None = None
    hyperv_defaults: dict[str, int | str | bool] = field(default_factory=dict)
    host_model: HostModel | None = None
    custom_models: list[str] = field(default_factory=list)
    sev: bool = False
    sgx: bool = False
    tdx: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LibvirtFacts:
    """uri: the connection asked (None for a replay, then replayed_from: the file);
    libvirt_version "9.0.0" (None for a replay); domcaps: None when there was no
    usable answer."""

    uri: str | None = None
    libvirt_version: str | None = None
    domcaps: DomainCapabilities | None = None
    replayed_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri}
        if self.libvirt_version is not None or self.domcaps is not None:
            out["libvirt_version"] = self.libvirt_version
        if self.domcaps is not None:
            out.update(self.domcaps.to_json())
        if self.replayed_from is not None:
            out["replayed_from"] = self.replayed_from
        return out


@dataclass(frozen=True)
class WhitelistFacts:
    """The kernel whitelist (kvm-version-info): os-release ID, running kernel
    release, the features whose checks passed (sorted), the config's absolute path."""

    os_id: str
    kernel_version: str
    whitelisted: list[str]
    config: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
