"""Graceful stop on SIGTERM/SIGINT for the label writers (`features-file`, `publish`).

The handler only records the signal and sets events: it never raises into the
main thread (an exception from a signal handler can land anywhere, e.g. in the
middle of a write). Whoever is waiting, for the next round (``event``) or for
a probe in flight (a waker added with ``wake_on_stop``), wakes at once.
"""

from __future__ import annotations

import signal
import threading


class StopOnSignal:
    """SIGTERM and SIGINT set ``event`` (and every registered waker)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""
        self._wakers: list[threading.Event] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        for waker in list(self._wakers):
            waker.set()

    def wake_on_stop(self, waker: threading.Event) -> None:
        """Set ``waker`` too when a stop signal arrives (already set if one came)."""
        self._wakers.append(waker)
        if self.event.is_set():
            waker.set()

    def forget(self, waker: threading.Event) -> None:
        if waker in self._wakers:
            self._wakers.remove(waker)
