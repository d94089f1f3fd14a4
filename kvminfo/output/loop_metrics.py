"""What a looping labeller (`features-file --interval`, `publish --interval`) tells operators:
Prometheus series on a registry of its own and the /healthz verdict, served by
kvminfo.common.metrics_http. Imported only when --metrics-port is given (prometheus-client
never loads on the NFD hook path).

Series (prometheus-client names counters ``<name>_total``):
  kvminfo_build_info{version,commit}            1 (Prometheus' info convention)
  kvminfo_probe_duration_seconds                histogram: each probe, every source at once
  kvminfo_last_success_timestamp_seconds        unix time the last OK round ended (0: none yet)
  kvminfo_labels                                labels of the last probe
  kvminfo_source_errors_total{source,status}    rounds a source was unavailable, timed out or failed
  kvminfo_rounds_total{result}                  rounds by how they ended (kvminfo.output.periodic)

/healthz: 200 while the last round ended OK at most STALE_ROUNDS x (interval + probe deadline)
ago; 503 with one line saying why otherwise (no round yet, the last round's failure, or no
round ending for too long: a stuck loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from kvminfo.common.durations import format_duration
from kvminfo.common.version import build_info
from kvminfo.output.periodic import FAILED, OK, ROUND_RESULTS, failed_sources

if TYPE_CHECKING:
    from kvminfo.model import Report

# /healthz stays 200 this many rounds (interval + probe deadline each) after the last OK
# round ended: one slow round is no alarm, two missed rounds are (the feature file's own
# margin: kvminfo.output.featurefile_writer refreshes two rounds before its expiry).
STALE_ROUNDS = 2
# From a cached libvirt answer (~25 ms) to a cold QEMU probe at a 100m CPU limit (~9 s) and
# the deadline --libvirt-timeout may set (1 m in deploy/).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LoopMetrics:
    """The series above and the health verdict; the periodic loop's RoundObserver."""

    def __init__(self, interval_s: float, probe_deadline_s: float, sources: Iterable[str],
                 clock: Callable[[], float] = time.time) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # as the plugin: rate() needs only _total
        self.registry = CollectorRegistry()
        self.stale_after_s = STALE_ROUNDS * (interval_s + probe_deadline_s)
        self._clock = clock
        self._started = clock()
        self._last: tuple[str, str, float] | None = None  # (result, reason, when) of the last round
        Info("kvminfo_build", "The running labeller's version and the commit it was built from",
             registry=self.registry).info(build_info())
        self.probe_duration = Histogram("kvminfo_probe_duration_seconds", "Time each probe took, all sources at once",
                                        buckets=DURATION_BUCKETS, registry=self.registry)
        self.last_success = Gauge("kvminfo_last_success_timestamp_seconds",
                                  "Unix time the last round that ended OK ended (0: none yet)", registry=self.registry)
        self.labels = Gauge("kvminfo_labels", "Labels the last probe produced", registry=self.registry)
        self.source_errors = Counter("kvminfo_source_errors", "Rounds in which a source did not answer, by status",
                                     ("source", "status"), registry=self.registry)
        self.rounds = Counter("kvminfo_rounds", "Rounds by how they ended", ("result",), registry=self.registry)
        for result in ROUND_RESULTS:  # every series from start: increase() sees the first failure too
            self.rounds.labels(result)
        for source in sources:
            for status in FAILED:
                self.source_errors.labels(source, status.value)

    def probed(self, report: Report, seconds: float) -> None:
        self.probe_duration.observe(seconds)
        self.labels.set(len(report.labels))
        for source in failed_sources(report):
            self.source_errors.labels(source.name, source.status.value).inc()

    def finished(self, result: str, reason: str) -> None:
        now = self._clock()
        self.rounds.labels(result).inc()
        if result == OK:
            self.last_success.set(now)
        self._last = (result, reason, now)

    def health(self) -> tuple[bool, str]:
        """(healthy, one line) for /healthz."""
        now = self._clock()
        if self._last is None:
            return False, f"no round has ended yet (started {format_duration(round(now - self._started))} ago)"
        result, reason, when = self._last
        ago = format_duration(round(now - when))
        if result != OK:
            return False, f"the last round ({ago} ago) ended {result}: {reason}"
        if now - when > self.stale_after_s:
            return False, (f"no round has ended for {ago} (more than {STALE_ROUNDS} x (interval + probe deadline) = "
                           f"{format_duration(round(self.stale_after_s))}): the loop is stuck")
        return True, f"ok: the last round ended {ago} ago"
