"""Graceful stop on SIGTERM/SIGINT for the long-running label writers
(`features-file --interval`, `publish --interval`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Stopped(Exception):
    """Raised by the signal handler while a probe is in flight (nothing to clean up then)."""


class StopOnSignal:
    """SIGTERM/SIGINT set an Event the loop waits on; during a probe they abort it at once.

    Never interrupts a write: the file stays whole and no temp file is left.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""
        self._abort_allowed = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if self._abort_allowed:
            raise Stopped

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        self._abort_allowed = True
        try:
            yield
        finally:
            self._abort_allowed = False
