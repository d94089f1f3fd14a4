"""collect(): run the registered sources at once, then the rules, then the labels.

Each enabled source (kvminfo/sources/registry.py) runs in its own thread under
its own deadline (kvminfo.sources.runner), so one failing or hanging never
stops the others. A source's module is imported only when it is enabled, so
the NFD hook path (--no-libvirt) never loads libvirt, xml, grpc or kubernetes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvminfo.features.combine import combine
from kvminfo.features.families import family_facts
from kvminfo.features.hyperv import evidence_and_reasons
from kvminfo.labels.render import render_labels
from kvminfo.model import ProbeOptions, Report, SourceResult, Status
from kvminfo.sources import registry
from kvminfo.sources.runner import run_sources

if TYPE_CHECKING:
    from kvminfo.sources.base import Source

log = logging.getLogger(__name__)


def _plan(options: ProbeOptions) -> tuple[list[Source], dict[str, SourceResult]]:
    """(sources to run, in registry order; name -> the DISABLED result of each one switched off)."""
    enabled, disabled = [], {}
    for entry in registry.SOURCES:
        if entry.enabled(options):
            enabled.append(entry.load())
        else:
            reason = entry.off_reason
            if entry.name in options.unneeded_sources:
                reason = f"not needed by the chosen families ({', '.join(options.families)})"
            disabled[entry.name] = SourceResult(entry.name, Status.DISABLED, reason)
    return enabled, disabled


def enabled_sources(options: ProbeOptions) -> list[str]:
    """The names of the sources collect(options) runs, in registry order (nothing is imported)."""
    return [entry.name for entry in registry.SOURCES if entry.enabled(options)]


def probe_deadline_s(options: ProbeOptions) -> float:
    """The longest collect(options) can take: the sources run at once, each under its own deadline."""
    enabled, _ = _plan(options)
    return max((source.deadline_s(options) for source in enabled), default=0.0)


def collect(options: ProbeOptions) -> Report:
    """Probe every enabled source concurrently; the operator's bad input (KvminfoError, ParseError) is raised."""
    enabled, disabled = _plan(options)
    ran = {result.name: result for result in run_sources(enabled, options)}
    sources = tuple(ran.get(entry.name) or disabled[entry.name] for entry in registry.SOURCES)
    for source in sources:
        if source.status in (Status.UNAVAILABLE, Status.ERROR):
            log.warning("%s %s: %s", source.name, source.status.value, source.reason)
    source_labels: dict[str, str] = {}
    attributes: dict[str, dict[str, object]] = {}
    for answered in enabled:
        result = ran[answered.name]
        if not result.ok:
            continue
        source_labels.update(answered.labels(result))
        if (attrs := answered.attributes(result)) is not None:
            attributes[answered.name] = dict(attrs)
    evidence, reasons = evidence_and_reasons(sources)
    features = combine(evidence, reasons=reasons)
    families = None
    if set(options.families) - {"caps", "version"}:
        families = family_facts(sources, options.obsolete_cpu_models)
    labels, warnings = render_labels(sources, features, options.kubevirt_names, options.families,
                                     source_labels=source_labels, family_facts=families)
    for warning in warnings:
        log.warning("%s", warning)
    return Report(sources, features, labels, tuple(warnings), attributes, families, options.families)
