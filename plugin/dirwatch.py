"""A thread that reports inotify events in a few directories.

Used twice: for the device nodes' directories (health) and for the plugin
directory (kubelet restarts). inotify-simple is a thin, maintained wrapper of
the syscalls, so no C extension and no polling library is needed.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from inotify_simple import INotify, flags

log = logging.getLogger(__name__)

# Everything that can make a node or socket appear, vanish or change access.
WATCH_MASK = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF

OnEvent = Callable[[str, str, int], None]  # (directory, name, mask)


class DirectoryWatcher:
    """Calls ``on_event(directory, name, mask)`` from its own thread.

    Directories that do not exist are skipped (the caller's slow poll covers
    them). ``stop()`` returns within one read timeout.
    """

    READ_TIMEOUT_MS = 100

    def __init__(self, directories: list[str], on_event: OnEvent, name: str) -> None:
        self._inotify = INotify()
        self._dir_of: dict[int, str] = {}
        for directory in dict.fromkeys(directories):
            try:
                self._dir_of[self._inotify.add_watch(directory, WATCH_MASK)] = directory
            except OSError as err:
                log.warning("cannot watch %s (%s); relying on the slow poll", directory, err.strerror)
        self._on_event = on_event
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def watching(self) -> list[str]:
        return list(self._dir_of.values())

    def start(self) -> DirectoryWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._inotify.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            for event in self._inotify.read(timeout=self.READ_TIMEOUT_MS):
                directory = self._dir_of.get(event.wd)
                if directory is None:
                    continue
                try:
                    self._on_event(directory, event.name, event.mask)
                except Exception:  # a bug in a callback must not kill the watch
                    log.exception("inotify callback failed for %s/%s", directory, event.name)
