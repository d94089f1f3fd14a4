"""Background threads, started and stopped one way (the labeller's source runner, the plugin's watchers),
the start/stop boilerplate of one background thread with a stop event (Worker: the plugin's health
monitor, inotify watchers, CDI spec keeper), and the thread that sleeps until a file descriptor is
readable (ReadableWorker: the inotify watchers, the metrics HTTP server of every long-running process)."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


def start_daemon(name: str, target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread: one that is hung (in a C call that
    never returns) must never keep the process from exiting."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def stop_thread(thread: threading.Thread | None, stop: threading.Event | None = None,
                timeout_s: float | None = None) -> bool:
    """Set ``stop`` (when given), then wait for ``thread`` up to ``timeout_s`` (None: for ever).

    A thread never started, or the calling thread itself, is not waited for.
    Returns True when the thread is gone.
    """
    if stop is not None:
        stop.set()
    if thread is None or thread.ident is None:
        return True
    if thread is not threading.current_thread():
        thread.join(timeout_s)
    return not thread.is_alive()


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


class ReadableWorker:
    """Calls ``on_readable()`` in a daemon thread named ``name`` each time ``fd`` is
    readable. In between it sleeps in poll(2) on ``fd`` and an eventfd with no
    timeout (no idle wake-ups); ``stop()`` writes the eventfd, so it ends at once.
    The caller owns ``fd`` and closes it after ``stop()``."""

    def __init__(self, name: str, fd: int, on_readable: Callable[[], None]) -> None:
        self._fd = fd
        self._on_readable = on_readable
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._worker = Worker(name, self._run, wake=lambda: os.eventfd_write(self._stop_fd, 1))

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        os.close(self._stop_fd)

    def _run(self, stopping: threading.Event) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_fd, select.POLLIN)
        while not stopping.is_set():
            if any(fd == self._fd for fd, _ in poller.poll()) and not stopping.is_set():  # blocks: no timeout
                self._on_readable()
