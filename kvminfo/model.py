"""Plain data passed between the layers: sources -> features -> labels.

Sources (kvminfo/sources/) do the I/O and return a SourceResult holding raw
facts only (typed: kvminfo/sources/facts.py). Feature rules (kvminfo/features/)
are pure functions from facts to FeatureVerdicts. Renderers (kvminfo/labels/)
turn verdicts and facts into validated NFD labels. kvminfo.collect.collect()
wires them together; the outputs (kvminfo/output/) take the Report.
"""

from __future__ import annotations

import enum

from kvminfo.record import field, record

TYPE_CHECKING = False  # typing costs ~3 ms of the NFD hook's start (see bench/); only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, Protocol

    class Facts(Protocol):
        """A source's typed facts (a frozen record or dataclass) that `kvminfo probe --json` can print."""

        def to_json(self) -> dict[str, Any]: ...


class Status(str, enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # device/daemon/file missing or unreadable
    TIMEOUT = "timeout"  # did not answer within its deadline
    ERROR = "error"  # answered, but with something we could not use
    DISABLED = "disabled"  # switched off by an option (--no-kvm, ...)


@record
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


@record
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


@record
class Report:
    sources: tuple[SourceResult, ...]
    features: tuple[FeatureVerdict, ...]
    labels: Mapping[str, str]  # validated NFD label key -> value
    warnings: tuple[str, ...] = ()
    # source name -> its NFD attributes (Source.attributes) for sources that answered and have some
    attributes: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # kvminfo.features.family_facts.FamilyFacts when a family beyond caps/version was asked for, else None
    # (typed by the Facts protocol so that this module, on the NFD hook's path, defines no family classes)
    families: Facts | None = None
    # the label families this report was rendered for (kvminfo.labels.FAMILIES names)
    rendered_families: tuple[str, ...] = ()

    def source(self, name: str) -> SourceResult | None:
        return source_named(self.sources, name)


def source_named(sources: Iterable[SourceResult], name: str) -> SourceResult | None:
    """The result of the source called ``name`` (a kvminfo.sources.facts constant), or None."""
    return next((s for s in sources if s.name == name), None)
