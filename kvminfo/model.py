"""Plain data passed between the layers: sources -> features -> labels.

Sources (kvminfo/sources/) do the I/O and return a SourceResult holding raw
facts only. Feature rules (kvminfo/features/) are pure functions from facts to
FeatureVerdicts. Renderers (kvminfo/labels/) turn verdicts and facts into
validated NFD labels. kvminfo.report.collect() wires them together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from collections.abc import Mapping

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start (see bench/); only mypy needs it
if TYPE_CHECKING:
    from typing import Any


class Status(str, enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # device/daemon/file missing or unreadable
    TIMEOUT = "timeout"  # did not answer within its deadline
    ERROR = "error"  # answered, but with something we could not use
    DISABLED = "disabled"  # switched off by an option (--no-kvm, ...)


@dataclass(frozen=True)
class SourceResult:
    """What one source saw. ``facts`` is JSON-serialisable raw data.

    Fact shapes (documented here so rules and sources agree):
    - kvm: api_version:int, caps:{KVM_CAP_NAME:int}, msrs:[int] or None,
      hv_cpuid:[{function,index,eax,ebx,ecx,edx}] or None (None = not
      obtainable, e.g. EINVAL / caps 0), hv_cpuid_via:"system"|"vcpu"|None,
      hv_cpuid_missing: why hv_cpuid is None (str) or None,
      nested:bool|None, cpu_vendor:"AMD"|"Intel"|... or None. When the device
      cannot be used only nested and cpu_vendor are present.
    - libvirt: hyperv: list of libvirt feature names (libvirt spelling:
      "stimer", "vendor_id", ...), [] when <hyperv supported='no'>, or None
      when the <hyperv> element is absent (unknown); hyperv_supported:
      bool|None (None = absent); hyperv_defaults:{child tag: int|str|bool}
      from libvirt >= 11.9 <defaults> ({} otherwise); host_model:{model,
      vendor} or None; custom_models:[str] (usable='yes'); max_vcpus:int|None;
      sev:bool; sgx:bool; tdx:bool; domain_type, arch, machine, emulator:
      str|None; uri:str|None and libvirt_version:"9.0.0"|None (None when
      replayed from a file; then replayed_from:path).
    - kernel-whitelist: os_id:str, kernel_version:str, whitelisted:[feature],
      config: absolute path of the whitelist config.
    """

    name: str
    status: Status
    reason: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class Support(str, enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FeatureVerdict:
    """One enlightenment's combined verdict with per-source provenance.

    ``said_by`` maps an evidence name ("kvm-caps", "kvm-hv-cpuid", "libvirt")
    to what that evidence said; sources that cannot know the feature are
    absent from it.
    """

    name: str  # canonical label suffix: "synictimer", "tlbflush-ext", ...
    support: Support
    said_by: Mapping[str, Support] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    sources: tuple[SourceResult, ...]
    features: tuple[FeatureVerdict, ...]
    labels: Mapping[str, str]  # validated NFD label key -> value
    warnings: tuple[str, ...] = ()

    def source(self, name: str) -> SourceResult | None:
        return next((s for s in self.sources if s.name == name), None)
