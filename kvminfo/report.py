"""collect(): run every enabled source at once, then rules and renderers.

Sources run in their own threads so that one failing or hanging never stops
the others: libvirt has its own deadline inside probe_libvirt, and the join
here is a second guard. The libvirt source is imported only when used, so
the NFD hook path (--no-libvirt) never loads libvirt, xml, grpc or kubernetes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from collections.abc import Callable

from kvminfo.errors import KvminfoError
from kvminfo.features.combine import combine
from kvminfo.features.hyperv import evidence_from_sources
from kvminfo.labels.render import render_labels
from kvminfo.model import Report, SourceResult, Status
from kvminfo.options import ProbeOptions

log = logging.getLogger(__name__)

# Local sources (a device, two files) answer in milliseconds; this only guards a wedged kernel.
LOCAL_SOURCE_DEADLINE_S = 5.0
# Extra time granted to probe_libvirt beyond its own deadline before we stop waiting.
JOIN_GRACE_S = 1.0


def _kvm(options: ProbeOptions) -> SourceResult:
    from kvminfo.sources.kvm import probe_kvm

    return probe_kvm(options.kvm_path)


def _libvirt(options: ProbeOptions) -> SourceResult:
    try:
        from kvminfo.sources.libvirt import probe_libvirt
    except ImportError as err:
        return SourceResult("libvirt", Status.UNAVAILABLE, f"libvirt source not importable: {err}")
    return probe_libvirt(options.libvirt_uri, options.libvirt_deadline_s, domcaps_xml=options.domcaps_xml)


def _kernel_whitelist(options: ProbeOptions) -> SourceResult:
    from kvminfo.sources.kernel_whitelist import probe_kernel_whitelist

    assert options.whitelist_config is not None
    return probe_kernel_whitelist(options.whitelist_config)


class _Run:
    """One source in its own daemon thread (a hung one must not keep the process alive)."""

    def __init__(self, name: str, probe: Callable[[ProbeOptions], SourceResult], options: ProbeOptions,
                 deadline_s: float) -> None:
        self.name, self.deadline_s = name, deadline_s
        self.result: SourceResult | None = None
        self.operator_error: KvminfoError | None = None
        self._thread = threading.Thread(target=self._run, args=(probe, options), name=f"source-{name}", daemon=True)

    def _run(self, probe: Callable[[ProbeOptions], SourceResult], options: ProbeOptions) -> None:
        started = time.monotonic()
        try:
            result = probe(options)
        except KvminfoError as err:  # bad input the operator must fix: fatal, reported by the CLI
            self.operator_error = err
            return
        except Exception as err:  # a bug in one source must not take the others down
            log.error("%s: source failed: %s: %s", self.name, type(err).__name__, err,
                      exc_info=log.isEnabledFor(logging.DEBUG))  # a traceback only when asked for
            result = SourceResult(self.name, Status.ERROR, f"internal error: {type(err).__name__}: {err}")
        self.result = replace(result, elapsed_ms=round((time.monotonic() - started) * 1000, 3))

    def start(self) -> None:
        self._thread.start()

    def finish(self, started: float) -> SourceResult:
        self._thread.join(max(0.0, started + self.deadline_s - time.monotonic()))
        if self.operator_error is not None:
            raise self.operator_error
        if self.result is None:
            reason = f"no answer within {self.deadline_s:g} s"
            log.warning("%s: %s; reporting without it", self.name, reason)
            return SourceResult(self.name, Status.TIMEOUT, reason, elapsed_ms=self.deadline_s * 1000)
        return self.result


def _plan(options: ProbeOptions) -> tuple[list[_Run], list[SourceResult]]:
    """(sources to run, results for the ones switched off)."""
    runs, disabled = [], []
    if options.use_kvm:
        runs.append(_Run("kvm", _kvm, options, LOCAL_SOURCE_DEADLINE_S))
    else:
        disabled.append(SourceResult("kvm", Status.DISABLED, "--no-kvm"))
    if options.use_libvirt:
        runs.append(_Run("libvirt", _libvirt, options, options.libvirt_deadline_s + JOIN_GRACE_S))
    else:
        disabled.append(SourceResult("libvirt", Status.DISABLED, "--no-libvirt"))
    if options.whitelist_config:
        runs.append(_Run("kernel-whitelist", _kernel_whitelist, options, LOCAL_SOURCE_DEADLINE_S))
    else:
        disabled.append(SourceResult("kernel-whitelist", Status.DISABLED, "no --whitelist-config"))
    return runs, disabled


def probe_deadline_s(options: ProbeOptions) -> float:
    """The longest collect(options) can take: the sources run at once, each under its own deadline."""
    runs, _ = _plan(options)
    return max((run.deadline_s for run in runs), default=0.0)


def collect(options: ProbeOptions) -> Report:
    """Probe every enabled source concurrently; a bad config (KvminfoError) is raised."""
    runs, disabled = _plan(options)
    started = time.monotonic()
    for run in runs:
        run.start()
    results = [run.finish(started) for run in runs]
    order = {"kvm": 0, "libvirt": 1, "kernel-whitelist": 2}
    sources = tuple(sorted(results + disabled, key=lambda s: order[s.name]))
    for source in sources:
        if source.status in (Status.UNAVAILABLE, Status.ERROR):
            log.warning("%s %s: %s", source.name, source.status.value, source.reason)
    features = combine(evidence_from_sources(sources))
    labels, warnings = render_labels(sources, features, options.kubevirt_names)
    for warning in warnings:
        log.warning("%s", warning)
    return Report(sources, features, labels, tuple(warnings))
