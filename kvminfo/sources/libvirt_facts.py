"""Typed facts of the libvirt source (a `virsh domcapabilities` document, and how it was had). Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


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
    names in document order, each once; sev/sgx/tdx: <features><NAME supported='yes'>.
    cpu_models, host_model_required_features, confidential: the label families'
    raw facts, shapes in kvminfo/sources/domcaps_families.py (None: not offered).
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
    cpu_models: list[dict[str, Any]] | None = None
    host_model_required_features: list[str] | None = None
    confidential: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """arch: <host><cpu><arch>; tsc_counter: {frequency_hz, scaling} or None (no invariant TSC,
    or the hypervisor could not say); machine_types: every <machine> name a KVM guest of the host's
    architecture can use, in document order, aliases (canonical=) and deprecated ones included,
    () when no guest offers KVM for it."""

    arch: str | None = None
    tsc_counter: dict[str, Any] | None = None
    machine_types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "tsc_counter": None if self.tsc_counter is None else dict(self.tsc_counter),
                "machine_types": list(self.machine_types)}


@dataclass(frozen=True)
class LibvirtFacts:
    """uri: the connection asked (None for a replay, then replayed_from: the file);
    libvirt_version "9.0.0" (None for a replay); qemu_version "7.2.0", the
    hypervisor's version as the connection reports it (virConnectGetVersion; None
    for a replay, or when it could not be had); domcaps: None when there was no
    usable answer. tsc_counter: host capabilities' <counter name='tsc'>
    ({frequency_hz, scaling}), asked only for the "tsc" label family; None when
    not asked, absent, or replayed. host_capabilities: the parsed host capabilities
    (kvminfo.sources.hostcaps; None when not asked, unusable, or not replayed); domcaps_flags: the
    virConnectGetDomainCapabilities flags asked with (0 for a replay); cpu_features: the
    host-model's baseline features (kvminfo.sources.cpu_baseline), None when not had, then
    cpu_features_missing says why when it was tried."""

    uri: str | None = None
    libvirt_version: str | None = None
    domcaps: DomainCapabilities | None = None
    qemu_version: str | None = None
    replayed_from: str | None = None
    tsc_counter: dict[str, Any] | None = None
    host_capabilities: HostCapabilities | None = None
    domcaps_flags: int = 0
    cpu_features: tuple[str, ...] | None = None
    cpu_features_missing: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri}
        if self.libvirt_version is not None or self.domcaps is not None:
            out["libvirt_version"] = self.libvirt_version
        if self.qemu_version is not None:
            out["qemu_version"] = self.qemu_version
        if self.domcaps is not None:
            out.update(self.domcaps.to_json())
        if self.replayed_from is not None:
            out["replayed_from"] = self.replayed_from
        if self.tsc_counter is not None:
            out["tsc_counter"] = dict(self.tsc_counter)
        if self.host_capabilities is not None:
            out["host_capabilities"] = self.host_capabilities.to_json()
        if self.domcaps is not None:
            out["domcaps_flags"] = self.domcaps_flags
        if self.cpu_features is not None:
            out["cpu_features"] = list(self.cpu_features)
        if self.cpu_features_missing is not None:
            out["cpu_features_missing"] = self.cpu_features_missing
        return out
