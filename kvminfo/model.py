"""Plain data passed between the layers: options -> sources -> features -> labels.

ProbeOptions says what to probe (the commands build it from their options).
Sources (kvminfo/sources/) do the I/O and return a SourceResult holding raw
facts only (typed: kvminfo/sources/facts.py). Feature rules (kvminfo/features/)
are pure functions from facts to FeatureVerdicts. Renderers (kvminfo/labels/)
turn verdicts and facts into validated NFD labels. kvminfo.collect.collect()
wires them together; the outputs (kvminfo/output/) take the Report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvminfo.labels import DEFAULT_FAMILIES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, Protocol

    class Facts(Protocol):
        """A source's typed facts (a frozen dataclass) that `kvminfo probe --json` can print."""

        def to_json(self) -> dict[str, Any]: ...


DEFAULT_KVM_PATH = "/dev/kvm"
DEFAULT_LIBVIRT_URI = "qemu:///system"
# The first domcapabilities call on a host probes QEMU (~4 s); later ones ~25 ms.
DEFAULT_LIBVIRT_DEADLINE_S = 10.0


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """What collect() probes and renders (built by kvminfo.commands.options from a command's options)."""

    kvm_path: str = DEFAULT_KVM_PATH
    use_kvm: bool = True
    use_libvirt: bool = True
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    libvirt_deadline_s: float = DEFAULT_LIBVIRT_DEADLINE_S
    domcaps_xml: str | None = None  # replay a recorded `virsh domcapabilities`
    replay_libvirt_version: str | None = None  # "X.Y.Z" of the libvirt that wrote domcaps_xml
    hostcaps_xml: str | None = None  # with domcaps_xml: replay a recorded `virsh capabilities`
    cpu_baseline_xml: str | None = None  # with domcaps_xml: replay `virsh hypervisor-cpu-baseline --features`
    whitelist_config: str | None = None  # kernel whitelist (kvm-version-info) JSON
    kubevirt_names: bool = False  # hyperv.node.kubevirt.io/<name> instead of kvm-info-cap-hyperv-<name>
    families: tuple[str, ...] = DEFAULT_FAMILIES  # label families to render (kvminfo/labels/__init__.py)
    obsolete_cpu_models: frozenset[str] | None = None  # --obsolete-cpu-models; None: KubeVirt's default list
    # Sources switched off by options_for_families because no chosen family needs them
    # (not by --no-kvm / --no-libvirt): `probe` says so instead of naming a flag nobody gave.
    unneeded_sources: frozenset[str] = frozenset()


class Status(str, enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # device/daemon/file missing or unreadable
    TIMEOUT = "timeout"  # did not answer within its deadline
    ERROR = "error"  # answered, but with something we could not use
    DISABLED = "disabled"  # switched off by an option (--no-kvm, ...)


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What one source saw: a status, a one-line reason when not OK, and its
    typed facts (kvminfo/sources/facts.py for the built-in sources; None when
    it learnt nothing)."""

    name: str
    status: Status
    reason: str = ""
    facts: Facts | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class Support(str, enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class FeatureVerdict:
    """One enlightenment's combined verdict with per-source provenance.

    ``said_by`` maps an evidence name ("kvm-caps", "kvm-hv-cpuid", "libvirt")
    to what that evidence said; sources that cannot know the feature are
    absent from it.
    """

    name: str  # canonical label suffix: "synictimer", "tlbflush-ext", ...
    support: Support
    said_by: Mapping[str, Support] = field(default_factory=dict)
    # evidence name -> why it said so (or, for libvirt, why its silence says nothing)
    reasons: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    sources: tuple[SourceResult, ...]
    features: tuple[FeatureVerdict, ...]
    labels: Mapping[str, str]  # validated NFD label key -> value
    warnings: tuple[str, ...] = ()
    # source name -> its NFD attributes (Source.attributes) for sources that answered and have some
    attributes: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # kvminfo.features.family_facts.FamilyFacts when a family beyond caps/version was asked for, else None
    # (typed by the Facts protocol: the family classes live with their rules in kvminfo/features/)
    families: Facts | None = None
    # the label families this report was rendered for (kvminfo.labels.FAMILIES names)
    rendered_families: tuple[str, ...] = ()

    def source(self, name: str) -> SourceResult | None:
        return source_named(self.sources, name)


def source_named(sources: Iterable[SourceResult], name: str) -> SourceResult | None:
    """The result of the source called ``name`` (a kvminfo.sources.facts constant), or None."""
    return next((s for s in sources if s.name == name), None)
