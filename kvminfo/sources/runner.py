"""Run sources under their deadlines: one thread and one deadline per source.

A source's ``probe`` may block in C (an ioctl on a wedged kernel, libvirt-python
waiting on a SIGSTOPped daemon) where Python cannot interrupt it. So each probe
runs in a daemon thread and the caller stops waiting at the source's deadline;
the other sources still report. A probe still blocked from an earlier round is
not joined by a second thread: the source is reported as timed out at once, so
a long-running writer (features-file/publish --interval) never piles up one
stuck thread per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from kvminfo.common.durations import format_duration
from kvminfo.common.errors import KvminfoError, ParseError
from kvminfo.common.threads import start_daemon
from kvminfo.model import SourceResult, Status

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvminfo.model import ProbeOptions
    from kvminfo.sources.base import Source

log = logging.getLogger(__name__)

# (source name, options) -> the thread still blocked in that source's probe from an earlier round.
_in_flight: dict[tuple[str, ProbeOptions], threading.Thread] = {}
_in_flight_lock = threading.Lock()


class _Run:
    def __init__(self, source: Source, options: ProbeOptions) -> None:
        self.source, self.options = source, options
        self.deadline_s = source.deadline_s(options)
        self.result: SourceResult | None = None
        self.operator_error: KvminfoError | ParseError | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        key = (self.source.name, self.options)
        with _in_flight_lock:
            previous = _in_flight.get(key)
            if previous is not None and previous.is_alive():
                self.result = SourceResult(self.source.name, Status.TIMEOUT,
                                           f"{self.source.describe(self.options)} still has not answered an earlier call")
                return
            _in_flight.pop(key, None)
            self.thread = start_daemon(f"source-{self.source.name}", self._probe)

    def _probe(self) -> None:
        started = time.monotonic()
        try:
            result = self.source.probe(self.options)
        except (KvminfoError, ParseError) as err:  # the operator's input: fatal, reported by the CLI
            self.operator_error = err
            return
        except Exception as err:  # a bug in one source must not take the others down
            log.error("%s: source failed: %s: %s", self.source.name, type(err).__name__, err,
                      exc_info=log.isEnabledFor(logging.DEBUG))  # a traceback only when asked for
            result = SourceResult(self.source.name, Status.ERROR, f"internal error: {type(err).__name__}: {err}")
        self.result = replace(result, elapsed_ms=round((time.monotonic() - started) * 1000, 3))
        log.debug("%s: %s in %.1f ms%s", self.source.describe(self.options), result.status.value,
                  self.result.elapsed_ms, f" ({result.reason})" if result.reason else "")

    def finish(self, started: float) -> SourceResult:
        if self.thread is not None:
            self.thread.join(max(0.0, started + self.deadline_s - time.monotonic()))
            if self.thread.is_alive():
                with _in_flight_lock:
                    _in_flight[(self.source.name, self.options)] = self.thread
        if self.operator_error is not None:
            raise self.operator_error
        if self.result is None:
            reason = f"{self.source.describe(self.options)} did not answer within {format_duration(self.deadline_s)}"
            log.warning("%s; reporting it as timed out, the other sources still count", reason)
            return SourceResult(self.source.name, Status.TIMEOUT, reason, elapsed_ms=self.deadline_s * 1000)
        return self.result


def run_sources(sources: Sequence[Source], options: ProbeOptions) -> list[SourceResult]:
    """Every source at once, each under its own deadline, results in the given order.

    The operator's input error (KvminfoError, ParseError) of any source is raised
    once all have finished or timed out.
    """
    runs = [_Run(source, options) for source in sources]
    started = time.monotonic()
    for run in runs:
        run.start()
    return [run.finish(started) for run in runs]


def run_source(source: Source, options: ProbeOptions) -> SourceResult:
    """One source under its deadline (what collect() does for each)."""
    return run_sources([source], options)[0]
