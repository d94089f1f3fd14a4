"""One background thread with a stop event: the start/stop boilerplate of the
health monitor, the inotify watcher and the metrics server, written once."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Worker:
    """Runs ``body(stopping)`` in a daemon thread named ``name``.

    ``stop()`` sets ``stopping`` and, while the thread runs, calls ``wake`` (to
    interrupt a blocking call that does not watch the event) and joins it. It is
    safe before ``start()`` (start-up failed) and when called twice.
    """

    def __init__(self, name: str, body: Callable[[threading.Event], None],
                 wake: Callable[[], None] | None = None) -> None:
        self.stopping = threading.Event()
        self._wake = wake
        self._thread = threading.Thread(target=body, args=(self.stopping,), name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            if self._wake is not None:
                self._wake()
            self._thread.join()
