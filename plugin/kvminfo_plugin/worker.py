"""One background thread with a stop event: the start/stop boilerplate of the
health monitor, the inotify watchers, the CDI spec keeper and the metrics
server, written once on top of kvminfo.common.threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kvminfo.common.threads import start_daemon, stop_thread


class Worker:
    """Runs ``body(stopping)`` in a daemon thread named ``name``.

    ``stop()`` sets ``stopping`` and, while the thread runs, calls ``wake`` (to
    interrupt a blocking call that does not watch the event) and joins it. It is
    safe before ``start()`` (start-up failed) and when called twice.
    """

    def __init__(self, name: str, body: Callable[[threading.Event], None],
                 wake: Callable[[], None] | None = None) -> None:
        self.stopping = threading.Event()
        self._name = name
        self._body = body
        self._wake = wake
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = start_daemon(self._name, self._body, self.stopping)

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread.is_alive() and self._wake is not None:
            self._wake()
        stop_thread(self._thread)
