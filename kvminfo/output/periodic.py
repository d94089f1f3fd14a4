"""The one loop behind `features-file` and `publish`: probe, write, wait, until stopped.

Without an interval: one round, its errors are the exit status, and a stop
signal before the output was written exits 1 (a one-shot caller, cron or an
init container, must not mistake it for success). With an interval: a round
every interval; the first round's bad input (a broken config) is fatal, any
later error and every output error is logged and retried next interval. A stop
signal (SIGTERM/SIGINT, kvminfo.common.stopping) interrupts a probe in flight or the
wait at once and exits 0; it never interrupts a write, so the output stays whole.

An observer (kvminfo.output.loop_metrics: the /metrics and /healthz of a looping run) is told
of each probe and how each round ended: OK, SOURCE_ERROR (the output is current, but an
enabled source did not answer, so its labels are missing), INPUT_ERROR (the operator's input
broke after start), OUTPUT_ERROR (the target could not be written). A stopped round is none.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from kvminfo.common.durations import format_duration
from kvminfo.common.errors import KvminfoError, ParseError, one_line
from kvminfo.common.threads import start_daemon
from kvminfo.model import Status

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from kvminfo.common.stopping import StopOnSignal
    from kvminfo.model import Report, SourceResult
    from kvminfo.output.base import Output

    class RoundObserver(Protocol):
        def probed(self, report: Report, seconds: float) -> None:
            """A probe returned ``report`` after ``seconds``."""

        def finished(self, result: str, reason: str) -> None:
            """A round ended with ``result`` (a ROUND_RESULTS name); ``reason`` one line, "" when OK."""

log = logging.getLogger(__name__)

OK, SOURCE_ERROR, INPUT_ERROR, OUTPUT_ERROR = "ok", "source_error", "input_error", "output_error"
ROUND_RESULTS = (OK, SOURCE_ERROR, INPUT_ERROR, OUTPUT_ERROR)
# A source in one of these did not answer this round (DISABLED was asked for).
FAILED = (Status.UNAVAILABLE, Status.TIMEOUT, Status.ERROR)


def failed_sources(report: Report) -> list[SourceResult]:
    """The enabled sources that did not answer in ``report``."""
    return [source for source in report.sources if source.status in FAILED]


class _ProbeError(Exception):
    """collect() raised the operator's input error (wrapped to tell it from an output's error)."""


def probe_unless_stopped(probe: Callable[[], Report], stop: StopOnSignal) -> Report | None:
    """``probe()`` in a worker thread, waited for until it returns or a stop signal
    arrives (None then: the worker is abandoned, a daemon blocked in C at worst)."""
    done = threading.Event()
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["report"] = probe()
        except BaseException as err:  # handed to the waiting thread, raised there
            box["error"] = err
        finally:
            done.set()

    stop.wake_on_stop(done)
    try:
        start_daemon("probe", work)
        done.wait()
    finally:
        stop.forget(done)
    error = box.get("error")
    if isinstance(error, (KvminfoError, ParseError)):
        raise _ProbeError() from error
    if isinstance(error, BaseException):  # a bug: its traceback, as if called here
        raise error
    if "report" not in box:  # woken by the stop signal
        return None
    return box["report"]  # type: ignore[return-value]


class _Quiet:
    """The observer of a run nobody watches (no metrics asked for)."""

    def probed(self, report: Report, seconds: float) -> None:
        pass

    def finished(self, result: str, reason: str) -> None:
        pass


def _round(output: Output, probe: Callable[[], Report], stop: StopOnSignal, one_shot: bool,
           observer: RoundObserver) -> Report | None:
    """Probe and write; the report once the output is current, None when stopped first."""
    started = time.monotonic()
    report = probe_unless_stopped(probe, stop)
    if report is None or stop.event.is_set():
        return None
    observer.probed(report, time.monotonic() - started)
    return report if output.write(report, one_shot, stop.event) else None


def run(output: Output, probe: Callable[[], Report], interval_s: float | None, stop: StopOnSignal,
        observer: RoundObserver | None = None) -> int:
    """Run ``output`` once (``interval_s`` None) or every ``interval_s`` seconds; the exit status."""
    observer = observer or _Quiet()
    if interval_s is None:
        try:
            written = _round(output, probe, stop, True, observer)
        except _ProbeError as err:
            raise err.__cause__ from None  # type: ignore[misc]
        if written is not None:
            return 0
        log.warning("stopped on %s before %s was written", stop.signal_name or "a stop request", output.target)
        return 1
    first = True
    log.info("refreshing %s every %s", output.target, format_duration(interval_s))
    while not stop.event.is_set():
        try:
            report = _round(output, probe, stop, False, observer)
            if report is not None:
                failed = failed_sources(report)
                observer.finished(SOURCE_ERROR if failed else OK,
                                  "; ".join(f"{s.name} {s.status.value}: {s.reason}" for s in failed))
        except _ProbeError as err:
            if first:  # bad input from the start: say so and stop, as a one-shot run would
                raise err.__cause__ from None  # type: ignore[misc]
            log.error("%s; retrying in %s", err.__cause__, format_duration(interval_s))
            observer.finished(INPUT_ERROR, one_line(err.__cause__))
        except (KvminfoError, ParseError) as err:  # the output's target may come back (API server, directory)
            log.error("%s; retrying in %s", err, format_duration(interval_s))
            observer.finished(OUTPUT_ERROR, one_line(err))
        first = False
        if stop.event.wait(interval_s):
            break
    log.info("stopping on %s", stop.signal_name or "a stop request")
    return 0
